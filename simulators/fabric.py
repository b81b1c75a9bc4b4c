"""The fabric shared by the simulated hosts of one cluster: the hosts themselves
(power, boot id, volumes, files, DRBD copies, VM processes), which DRBD peers can
talk (partitions, cut links), resync progress on a controllable clock, and the
faults tests and drills inject.

No I/O, no asyncio: the SSH glue (`simulators.ssh_server`) and the tools
(`simulators.tools`) call into it. Imports nothing from corral's own packages.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from simulators.drbd_model import Copy, DrbdError, LinkState, new_uuid, resolve_connect

_pids = itertools.count(4000)


@dataclass
class Volume:
    vg: str
    name: str
    size_mib: int


@dataclass
class Vm:
    name: str
    pid: int
    memory_mib: int
    vcpus: int
    drives: list[str]
    qmp_path: str
    pidfile: str
    argv: list[str]
    status: str = "running"  # running, paused, inmigrate, postmigrate, shutdown
    incoming: tuple[str, int] | None = None
    # The taps qemu made for the VM's NICs (`-netdev tap,ifname=`), each with the
    # bridge `ip link set dev TAP master BR` put it on ("" until then).
    taps: dict[str, str] = field(default_factory=dict)
    # What QMP hotplug sees: device id -> PCI slot, netdev ids (-> tap), block
    # nodes added by blockdev-add (-> the device file).
    devices: dict[str, str] = field(default_factory=dict)
    netdevs: dict[str, str] = field(default_factory=dict)
    block_nodes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OsRun:
    """One run of an OS definition's script: what it was and the environment it got."""

    script: str
    argv: tuple[str, ...]
    env: dict[str, str]


@dataclass
class Host:
    name: str
    cpus: int
    memory_mib: int
    vg_name: str
    vg_size_mib: int
    address: str = "127.0.0.1"
    # The loaded DRBD module: "9.2.5" (drbdsetup status --json) or "8.4.11", the
    # distribution kernels' (events2 only, connections named `peer`).
    drbd_version: str = "9.2.5"
    powered: bool = True
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    volumes: dict[str, Volume] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    copies: dict[str, Copy] = field(default_factory=dict)
    vms: dict[str, Vm] = field(default_factory=dict)
    failed_disks: set[str] = field(default_factory=set)
    # /dev/drbdN -> the image's sha256, or `os:OS:INSTANCE` written by an OS
    # definition's create script (simulators.tools.osdef)
    images: dict[str, str] = field(default_factory=dict)
    os_runs: list[OsRun] = field(default_factory=list)  # OS definition scripts run here
    private: set[str] = field(default_factory=set)  # files written root-only (0600, dir 0700)
    bridges: set[str] = field(default_factory=lambda: {"br0"})

    @property
    def vg_free_mib(self) -> int:
        return self.vg_size_mib - sum(v.size_mib for v in self.volumes.values())

    @property
    def memory_used_mib(self) -> int:
        return 512 + sum(vm.memory_mib for vm in self.vms.values())

    @property
    def drbd_major(self) -> int:
        return int(self.drbd_version.split(".")[0])

    def holder_of(self, minor: int) -> Vm | None:
        for vm in self.vms.values():
            if f"/dev/drbd{minor}" in vm.drives and vm.status != "shutdown":
                return vm
        return None


@dataclass
class CommandFault:
    """Make commands matching `match` (a substring of the command line) fail, hang
    or slow down: on the `nth` match only (1-based), or on every match if nth=0."""

    match: str
    kind: str  # "fail", "hang", "slow"
    nth: int = 0
    seconds: float = 0.0
    seen: int = 0


@dataclass
class Fabric:
    hosts: dict[str, Host] = field(default_factory=dict)
    sync_rate_mib_s: float = 1000.0
    clock: Callable[[], float] = time.monotonic
    cut_pairs: set[frozenset[str]] = field(default_factory=set)
    isolated_from_orchestrator: set[str] = field(default_factory=set)
    command_faults: dict[str, list[CommandFault]] = field(default_factory=dict)
    _connected: set[tuple[str, frozenset[str]]] = field(default_factory=set)
    _last_tick: float | None = None
    _res_tick: dict[str, float] = field(default_factory=dict)
    frozen: bool = False
    web: dict[str, bytes] = field(default_factory=dict)  # what `curl URL` gets on any host
    # Every command a host ran, (clock time, host, command line or "qmp CMD vm"),
    # the newest last: what the tests' invariants read.
    journal: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=200_000))

    def record(self, host: str, command: str) -> None:
        self.journal.append((self.clock(), host, command))

    # ---------------------------------------------------------------- topology

    def add_host(self, host: Host) -> Host:
        self.hosts[host.name] = host
        return host

    def can_talk(self, a: str, b: str) -> bool:
        ha, hb = self.hosts.get(a), self.hosts.get(b)
        return (
            ha is not None
            and hb is not None
            and ha.powered
            and hb.powered
            and frozenset((a, b)) not in self.cut_pairs
        )

    def peer_copy(self, host: str, res: str) -> tuple[str, Copy] | None:
        copy = self.hosts[host].copies.get(res)
        if copy is None:
            return None
        for other in copy.config.hosts:
            if other != host:
                peer = self.hosts.get(other)
                if peer is None:
                    return None
                pc = peer.copies.get(res)
                if pc is None or pc.config.hosts.keys() != copy.config.hosts.keys():
                    return None
                return other, pc
        return None

    # ---------------------------------------------------------------- time

    def tick(self, only: Collection[str] | None = None) -> None:
        """Advance connections and resyncs to now: of every resource, or of the
        resources named in `only` (what one command touches; ticking all of them
        on every command would make a large lab quadratic). Each resource keeps its
        own last tick, so partial and full ticks account time the same way."""
        now = self.clock()
        since_all = self._last_tick
        if only is None:
            self._last_tick = now
        pairs = [
            (host, res, copy)
            for host in self.hosts.values()
            for res, copy in host.copies.items()
            if only is None or res in only
        ]
        touched = only if only is not None else {r for h in self.hosts.values() for r in h.copies}
        self._advance(pairs, touched, now, since_all)

    def tick_host(self, name: str) -> None:
        """Advance the resources of one host and their peers' copies (what its
        `drbdsetup status` shows) without looking at every other host: with 200
        hosts, a full scan per probe was most of the simulator's time. A copy
        elsewhere that its configuration does not pair with these does not move
        on its own (it has no peer), so nothing is left behind."""
        host = self.hosts[name]
        pairs = []
        for res, copy in host.copies.items():
            for other in copy.config.hosts:
                holder = self.hosts.get(other)
                if holder is not None and res in holder.copies:
                    pairs.append((holder, res, holder.copies[res]))
            if name not in copy.config.hosts:
                pairs.append((host, res, copy))
        self._advance(pairs, set(host.copies), self.clock(), self._last_tick)

    def _advance(
        self,
        pairs: list[tuple[Host, str, Copy]],
        touched: Collection[str],
        now: float,
        since_all: float | None,
    ) -> None:
        for host, res, copy in pairs:
            if not host.powered:
                continue
            last = self._res_tick.get(res, since_all)
            elapsed = 0.0 if last is None or self.frozen else max(0.0, now - last)
            if not copy.up:
                continue
            peer = self.peer_copy(host.name, res)
            key = (res, frozenset((host.name, peer[0] if peer else "")))
            linked = (
                peer is not None
                and peer[1].up
                and self.can_talk(host.name, peer[0])
                and not copy.standalone
                and not peer[1].standalone
            )
            if not linked:
                if key in self._connected:
                    self._connected.discard(key)
                    self._disconnected(copy)
                    if peer is not None:
                        self._disconnected(peer[1])
                continue
            assert peer is not None
            pcopy = peer[1]
            if key not in self._connected:
                self._connected.add(key)
                self._on_connect(copy, pcopy)
                if key not in self._connected:
                    continue
            self._advance_sync(copy, pcopy, elapsed)
        for res in touched:
            self._res_tick[res] = now

    def _disconnected(self, copy: Copy) -> None:
        if copy.role == "Primary":
            copy.history.append(copy.current)
            copy.current = new_uuid()
            copy.wrote_disconnected = True
        if copy.disk == "Inconsistent" and copy.sync_done_mib > 0:
            copy.sync_done_mib = 0.0

    def _on_connect(self, a: Copy, b: Copy) -> None:
        outcome = resolve_connect(a, b)
        if outcome == "split-brain" or (
            a.role == "Primary" and b.role == "Primary" and a.current != b.current
        ):
            a.standalone = b.standalone = True
            for key in [k for k in self._connected if k[0] == a.name]:
                self._connected.discard(key)
            return
        if outcome == "a->b":
            self._start_sync(source=a, target=b)
        elif outcome == "b->a":
            self._start_sync(source=b, target=a)
        a.discard_my_data = b.discard_my_data = False
        a.wrote_disconnected = b.wrote_disconnected = False

    def _start_sync(self, *, source: Copy, target: Copy) -> None:
        if source.disk != "UpToDate":
            return
        target.disk = "Inconsistent"
        target.sync_done_mib = 0.0
        target.history = [*source.history]
        target.current = source.current

    def _advance_sync(self, a: Copy, b: Copy, elapsed: float) -> None:
        for target, source in ((a, b), (b, a)):
            if target.disk == "Inconsistent" and source.disk == "UpToDate":
                if target.current != source.current:
                    target.current = source.current
                    target.history = [*source.history]
                target.sync_done_mib += elapsed * self.sync_rate_mib_s
                if target.sync_done_mib >= max(target.size_mib, 1):
                    target.disk = "UpToDate"
                    target.sync_done_mib = 0.0
            if source.role == "Primary" and target.disk == "UpToDate":
                target.current = source.current

    def link(self, host: str, res: str) -> LinkState | None:
        """The connection of `host`'s copy of `res` to its peer, as drbdsetup shows it."""
        copy = self.hosts[host].copies[res]
        peer = self.peer_copy(host, res)
        key = (res, frozenset((host, peer[0] if peer else "")))
        if peer is None or key not in self._connected:
            return LinkState(
                connection="StandAlone" if copy.standalone else "Connecting",
                replication="Off",
                peer_role="Unknown",
                peer_disk="DUnknown",
                percent=100.0 if copy.disk == "UpToDate" else 0.0,
            )
        pcopy = peer[1]
        replication = "Established"
        percent = 100.0
        if copy.disk == "Inconsistent" and pcopy.disk == "UpToDate":
            replication = "SyncTarget"
            percent = min(99.9, 100.0 * copy.sync_done_mib / max(copy.size_mib, 1))
        elif pcopy.disk == "Inconsistent" and copy.disk == "UpToDate":
            replication = "SyncSource"
            percent = min(99.9, 100.0 * pcopy.sync_done_mib / max(pcopy.size_mib, 1))
        return LinkState(
            connection="Connected",
            replication=replication,
            peer_role=pcopy.role,
            peer_disk=pcopy.disk,
            percent=round(percent, 1),
        )

    def connected(self, host: str, res: str) -> bool:
        link = self.link(host, res)
        return link is not None and link.connection == "Connected"

    # ---------------------------------------------------------------- power & faults

    def power_off(self, name: str) -> None:
        host = self.hosts[name]
        self.tick()
        host.powered = False
        host.vms.clear()
        for copy in host.copies.values():
            copy.up = False
            copy.role = "Secondary"
            copy.standalone = False
        # /run is a tmpfs: pid files and sockets vanish.
        for path in [p for p in host.files if p.startswith("/run/")]:
            del host.files[path]
        self.tick()

    def power_on(self, name: str) -> None:
        host = self.hosts[name]
        if host.powered:
            return
        host.powered = True
        host.boot_id = str(uuid.uuid4())
        self.tick()

    def crash(self, name: str) -> None:
        self.power_off(name)

    def fail_disk(self, name: str, res: str) -> None:
        copy = self.hosts[name].copies.get(res)
        if copy is None:
            raise DrbdError(f"{res}: no such resource on {name}")
        copy.disk = "Failed"
        self.tick()

    def kill_vm(self, name: str, vm: str) -> None:
        self.hosts[name].vms.pop(vm, None)

    def next_pid(self) -> int:
        return next(_pids)

    def fault_for(self, host: str, command: str) -> CommandFault | None:
        for fault in self.command_faults.get(host, []):
            if fault.match in command:
                fault.seen += 1
                if fault.nth == 0 or fault.seen == fault.nth:
                    return fault
        return None

    def find_incoming(self, address: str, port: int) -> tuple[Host, Vm] | None:
        for host in self.hosts.values():
            if not host.powered:
                continue
            for vm in host.vms.values():
                if (
                    vm.incoming is not None
                    and vm.incoming[1] == port
                    and (vm.incoming[0] in (address, "0.0.0.0") or host.address == address)
                ):
                    return host, vm
        return None
