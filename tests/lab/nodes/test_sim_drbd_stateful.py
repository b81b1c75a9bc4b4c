"""Hypothesis state machine over the simulated DRBD model, driven through the
node shell with the real drbdadm argv: whatever the order of commands and faults,
two connected peers are never both Primary, and once connected a resync always
ends with both sides UpToDate."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from simulators.fabric import Fabric, Host
from simulators.shell import run_line

RES = """resource r0 {
  net { protocol C; allow-two-primaries no; }
  on a { node-id 0; address 10.0.0.1:7789; device /dev/drbd0 minor 0;
         disk /dev/vg/r0; meta-disk internal; }
  on b { node-id 1; address 10.0.0.2:7789; device /dev/drbd0 minor 0;
         disk /dev/vg/r0; meta-disk internal; }
}
"""
NODES = st.sampled_from(["a", "b"])


class DrbdMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.fabric = Fabric(clock=lambda: self.now, sync_rate_mib_s=100.0)
        for name in ("a", "b"):
            self.fabric.add_host(
                Host(name=name, cpus=2, memory_mib=4096, vg_name="vg", vg_size_mib=4096)
            )
            self.sh(name, "lvcreate -L 512m -n r0 vg")
            self.sh(name, "tee /etc/drbd.d/r0.res", RES)
            self.sh(name, "drbdadm create-md --force r0")

    def sh(self, node: str, line: str, stdin: str = "") -> int:
        host = self.fabric.hosts[node]
        if not host.powered:
            return 255
        return run_line(self.fabric, host, line, stdin.encode()).rc

    @rule(node=NODES)
    def up(self, node: str) -> None:
        self.sh(node, "drbdadm up r0")

    @rule(node=NODES)
    def adjust(self, node: str) -> None:
        self.sh(node, "drbdadm adjust r0")

    @rule(node=NODES)
    def down(self, node: str) -> None:
        self.sh(node, "drbdadm down r0")

    @rule(node=NODES, force=st.booleans())
    def primary(self, node: str, force: bool) -> None:
        self.sh(node, "drbdadm primary --force r0" if force else "drbdadm primary r0")

    @rule(node=NODES)
    def secondary(self, node: str) -> None:
        self.sh(node, "drbdadm secondary r0")

    @rule(node=NODES)
    def disconnect(self, node: str) -> None:
        self.sh(node, "drbdadm disconnect r0")

    @rule(node=NODES, discard=st.booleans())
    def connect(self, node: str, discard: bool) -> None:
        self.sh(node, "drbdadm connect --discard-my-data r0" if discard else "drbdadm connect r0")

    @rule()
    def cut(self) -> None:
        self.fabric.cut_pairs.add(frozenset(("a", "b")))
        self.fabric.tick()

    @rule()
    def restore(self) -> None:
        self.fabric.cut_pairs.clear()
        self.fabric.tick()

    @rule(node=NODES)
    def power_cycle(self, node: str) -> None:
        self.fabric.power_off(node)
        self.fabric.power_on(node)

    @rule(seconds=st.floats(min_value=0.0, max_value=10.0))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.fabric.tick()

    @invariant()
    def never_two_primaries_on_connected_peers(self) -> None:
        self.fabric.tick()
        a, b = (self.fabric.hosts[n].copies.get("r0") for n in ("a", "b"))
        if a and b and a.up and b.up and self.fabric.connected("a", "r0"):
            assert not (a.role == "Primary" and b.role == "Primary")

    @precondition(lambda self: True)
    @invariant()
    def connected_resync_ends_uptodate(self) -> None:
        a, b = (self.fabric.hosts[n].copies.get("r0") for n in ("a", "b"))
        if not (a and b and a.up and b.up and self.fabric.connected("a", "r0")):
            return
        if "UpToDate" not in (a.disk, b.disk):
            return  # nothing to sync from yet (a fresh pair)
        self.now += 10.0  # 512 MiB at 100 MiB/s
        self.fabric.tick()
        if self.fabric.connected("a", "r0"):
            assert (a.disk, b.disk) == ("UpToDate", "UpToDate")


TestDrbdModel = DrbdMachine.TestCase
TestDrbdModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
