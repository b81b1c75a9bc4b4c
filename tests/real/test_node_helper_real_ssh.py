"""The node helper behind a real OpenSSH server and real sudo, installed by
deploy/'s script with deploy/'s sudoers rule (in a private mount namespace: this
machine's own accounts and files are untouched): the corral account runs the
helper's verbs and nothing else as root, the helper refuses what does not
validate and what carries a stale term, and the orchestrator's SshNodeOps starts a
real qemu through it, reaches its QMP socket through SSH forwarding as the
unprivileged account, and stops it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from events.ids import InstanceName, NodeName
from events.specs import DiskSpec, InstanceSpec, NodeSpec
from reactors.nodes.commands import HELPER, drbd_config, vm_kill
from reactors.nodes.probe import PROBE_SECTIONS, SEPARATOR
from reactors.nodes.ssh_ops import SshNodeOps
from reactors.plans.steps import DiskConfig, DrbdPeerConfig, Step, StepKind
from tests.support.nodes.real_sshd import RealNode, skip_reason, start_real_node

REASON = skip_reason()
pytestmark = [
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
    pytest.mark.timeout(180),
]
VM = "nodeside-real-web"  # a name only this test uses: its qemu is found by it
MINOR = 3


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RealNode]:
    real = await asyncio.to_thread(start_real_node, tmp_path, minors=(MINOR,))
    try:
        yield real
    finally:
        await asyncio.to_thread(real.stop, (VM,))


async def run(conn: asyncssh.SSHClientConnection, line: str, stdin: str = "") -> tuple[int, str]:
    done = await conn.run(line, input=stdin or None, check=False)
    return int(done.exit_status if done.exit_status is not None else 255), str(done.stdout) + str(
        done.stderr
    )


def test_the_shipped_sudoers_rule_is_valid() -> None:
    if REASON is not None and "visudo" in REASON:
        pytest.skip(REASON)
    rule = Path(__file__).resolve().parents[2] / "deploy/node/sudoers-corral"
    checked = subprocess.run(["visudo", "-cf", str(rule)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_the_account_runs_the_helper_and_nothing_else_as_root(node: RealNode) -> None:
    async with await node.connect() as conn:
        assert await run(conn, "id -un") == (0, "corral\n")
        for line in ("sudo -n id", "sudo -n /bin/sh -c id", "sudo -n /usr/sbin/drbdadm up x-d0"):
            rc, out = await run(conn, line)
            assert (rc, out) == (1, "sudo: a password is required\n"), line
        assert await run(conn, f"sudo -n {HELPER} version") == (0, "corral-node-helper 1\n")
        rc, out = await run(conn, f"sudo -n {HELPER} lv-create --term 1 corral 'x;id' 64")
        assert (rc, out) == (
            64,
            "corral-node-helper: lv-create: LV 'x;id' is not a corral disk name (INSTANCE-dN)\n",
        )
        rc, out = await run(conn, f"sudo -n {HELPER} drbdadm --term 1 up --config=/tmp/x x-d0")
        assert rc == 64 and "option '--config=/tmp/x' is not allowed" in out
        # The helper is root's; the account can neither change it nor the run dir.
        rc, out = await run(conn, f"stat -c '%U %a' {HELPER} /usr/local/lib/corral")
        assert (rc, out) == (0, "root 755\nroot 755\n")
        rc, _ = await run(conn, f"echo x >> {HELPER}")
        assert rc != 0

        disk = DiskConfig(
            resource="web-d0",
            index=0,
            size_mib=16,
            minor=MINOR,
            port=11003,
            volume_group="corral",
            hosts=(
                DrbdPeerConfig(node=NodeName("a"), address="10.0.0.1", node_id=0),
                DrbdPeerConfig(node=NodeName("b"), address="10.0.0.2", node_id=1),
            ),
        )
        body = json.dumps(drbd_config(disk).body)
        assert (await run(conn, f"sudo -n {HELPER} drbd-config --term 4", body))[0] == 0
        rc, out = await run(conn, "stat -c '%U %a' /etc/drbd.d/web-d0.res")
        assert (rc, out) == (0, "root 644\n")
        assert (await run(conn, f"sudo -n {HELPER} term")) == (0, "4\n")
        rc, out = await run(conn, f"sudo -n {HELPER} drbd-remove-config --term 3 web-d0")
        assert rc == 75 and "term 3 is older than term 4" in out
        assert (await run(conn, "test -e /etc/drbd.d/web-d0.res"))[0] == 0
        rc, out = await run(conn, f"sudo -n {HELPER} probe")
        assert rc == 0 and out.count(SEPARATOR) == PROBE_SECTIONS - 1


def ops_for(node: RealNode) -> SshNodeOps:
    ops = SshNodeOps(known_hosts=node.known_hosts, client_key=node.client_key)
    ops.update_nodes(
        {
            NodeName("real"): NodeSpec(
                name=NodeName("real"),
                address="127.0.0.1",
                port=node.port,
                memory_mib=1024,
                disk_mib=1024,
                cpus=1,
            )
        }
    )
    ops.set_term(2)
    return ops


async def test_ssh_node_ops_runs_a_real_qemu_through_the_helper(node: RealNode) -> None:
    ops = ops_for(node)
    disk = DiskConfig(
        resource=f"{VM}-d0",
        index=0,
        size_mib=16,
        minor=MINOR,
        port=11003,
        volume_group="corral",
        hosts=(DrbdPeerConfig(node=NodeName("real"), address="127.0.0.1", node_id=0),),
    )
    spec = InstanceSpec(
        name=InstanceName(VM), memory_mib=64, vcpus=1, disks=(DiskSpec(size_mib=16),)
    )
    start = Step(
        kind=StepKind.START_VM,
        node=NodeName("real"),
        instance=InstanceName(VM),
        spec=spec,
        disks=(disk,),
    )
    stop = Step(kind=StepKind.STOP_VM, node=NodeName("real"), instance=InstanceName(VM))
    try:
        outcome = await ops.execute(start)
        assert outcome.ok, outcome.error
        (pid,) = node.qemu_pids(VM)
        # QMP through SSH forwarding as the corral account: the helper gave the
        # socket to its group.
        status = await ops.qmp(NodeName("real"), VM, "query-status")
        assert status["return"]["status"] in ("running", "prelaunch")
        outcome = await ops.execute(stop)
        assert outcome.ok and outcome.command == f"qmp quit {VM}", outcome
        for _ in range(100):
            if not node.qemu_pids(VM):
                break
            await asyncio.sleep(0.05)
        assert node.qemu_pids(VM) == []

        # Again, then the helper's kill by name (as when qemu stops answering QMP).
        assert (await ops.execute(start)).ok
        (pid,) = node.qemu_pids(VM)
        result = await ops.helper(NodeName("real"), vm_kill(VM))
        assert (result.rc, result.stdout) == (0, f"sent -9 to {VM} ({pid})\n")
        for _ in range(100):
            if not node.qemu_pids(VM):
                break
            await asyncio.sleep(0.05)
        assert node.qemu_pids(VM) == []
        result = await ops.helper(NodeName("real"), vm_kill(VM))
        assert (result.rc, result.stdout) == (0, f"{VM} is not running\n")

        ops.set_term(1)  # a deposed leader: the node has seen term 2
        outcome = await ops.execute(start)
        assert not outcome.ok and "stale term" in outcome.error, outcome
        assert node.qemu_pids(VM) == []
    finally:
        await ops.close()
