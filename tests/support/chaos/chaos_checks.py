"""The invariants a chaos run checks after every step, read from resulting state:
the simulated hosts (what runs where, which DRBD links are up, who was powered
off), and the event log in etcd (terms, job logs, acknowledged events). Also the
fence watch, a background sampler that remembers for how long each node was
vouched for by a reachable majority, so that a power-off can be judged against
what the cluster looked like just before it. Injects no fault and calls no
reactor."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from events.election import WATCH_ERRORS
from events.ids import EventId
from events.model import JobSubmitted, JobUpdated
from events.store import EtcdUnavailable, EventStore
from simulators.fabric import Fabric
from tests.support.chaos.terms import deposed_writes, term_history

# The node helper's read-only verbs, and the DRBD version read before a first probe.
READS = re.compile(r"corral-node-helper (probe|term|version)\b|^head -n 1 /proc/drbd")
RESUMED = "resumed by a new leader or after a restart"


def node_commands_since(fabric: Fabric, since: float) -> list[str]:
    """What nodes ran after `since` (fabric clock), probes left out (they read)."""
    return [
        f"{host}: {cmd[:80]}"
        for at, host, cmd in fabric.journal
        if at > since and not READS.search(cmd)
    ]


def check_hosts(fabric: Fabric) -> None:
    """One running copy of every VM; never two connected primaries of a disk,
    unless both sides allow two primaries (a live migration's window)."""
    names = {vm for h in fabric.hosts.values() for vm in h.vms}
    for name in names:
        running = sorted(
            h.name
            for h in fabric.hosts.values()
            if h.powered and name in h.vms and h.vms[name].status == "running"
        )
        assert len(running) <= 1, f"{name} runs on {running}"
    for res in {r for h in fabric.hosts.values() for r in h.copies}:
        prim = [
            h.name
            for h in fabric.hosts.values()
            if h.powered
            and res in h.copies
            and h.copies[res].up
            and h.copies[res].role == "Primary"
        ]
        if len(prim) == 2 and fabric.connected(prim[0], res):
            migrating = all(fabric.hosts[h].copies[res].config.allow_two_primaries for h in prim)
            assert migrating, f"{res} primary on connected {prim}"


def vouched(fabric: Fabric, node: str) -> bool:
    """A strict majority of the nodes is reachable from the orchestrator, and one
    of those reachable nodes has a connected DRBD link to `node` right now (it
    reports `node` alive)."""
    reachable = [
        h
        for h in fabric.hosts.values()
        if h.powered and h.name not in fabric.isolated_from_orchestrator
    ]
    if len(reachable) * 2 <= len(fabric.hosts):
        return False
    for h in reachable:
        if h.name == node:
            continue
        for res, copy in h.copies.items():
            peer = fabric.peer_copy(h.name, res)
            if peer and peer[0] == node and copy.up and fabric.connected(h.name, res):
                return True
    return False


@dataclass
class FenceWatch:
    """Samples the hosts every `interval_s`. A node powered off that the chaos run
    did not crash itself was fenced; if a reachable majority had vouched for it
    without a break for `window_s` before (the decision window: the lost timeout
    plus the fence agent's retries), that fence broke the majority-evidence rule."""

    fabric: Fabric
    window_s: float
    interval_s: float = 0.1
    clock: Callable[[], float] = time.monotonic
    fences: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    _expected_off: set[str] = field(default_factory=set)
    _powered: dict[str, bool] = field(default_factory=dict)
    _vouched_since: dict[str, float | None] = field(default_factory=dict)

    def expect_off(self, node: str) -> None:
        """The chaos run itself is about to crash `node`: not a fence."""
        self._expected_off.add(node)

    def sample(self) -> None:
        now = self.clock()
        for name, host in self.fabric.hosts.items():
            was = self._powered.get(name, host.powered)
            if was and not host.powered:
                if name in self._expected_off:
                    self._expected_off.discard(name)
                else:
                    since = self._vouched_since.get(name)
                    held = 0.0 if since is None else now - since
                    self.fences.append(name)
                    if held >= self.window_s:
                        self.violations.append(
                            f"{name} fenced while a reachable majority had vouched "
                            f"for it for {held:.1f}s"
                        )
            self._powered[name] = host.powered
            if host.powered and vouched(self.fabric, name):
                if self._vouched_since.get(name) is None:
                    self._vouched_since[name] = now
            else:
                self._vouched_since[name] = None

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)


def job_step_repeats(events: Sequence[JobSubmitted | JobUpdated]) -> list[str]:
    """Job steps whose intent ("run STEP") was recorded twice within one runner's
    turn (between two resumptions), and jobs started twice. A job resumed by a
    new leader may check and redo a step whose outcome was never recorded; the
    same runner never does, and no job is started by two runners."""
    bad = []
    seen: dict[str, set[str]] = {}
    started: Counter[str] = Counter()
    for e in events:
        if not isinstance(e, JobUpdated):
            continue
        line = e.log
        if line.startswith("started "):
            started[e.job_id] += 1
            if started[e.job_id] > 1:
                bad.append(f"job {e.job_id} started twice")
        if line == RESUMED:
            seen[e.job_id] = set()
        elif line.startswith("run "):
            steps = seen.setdefault(e.job_id, set())
            if line in steps:
                bad.append(f"job {e.job_id}: {line!r} twice in one run")
            steps.add(line)
    return bad


def migrations_driven_twice(
    fabric: Fabric, events: Sequence[JobSubmitted | JobUpdated]
) -> list[str]:
    """Every live migration a host performed belongs to a migrate job of its own."""
    jobs: Counter[str] = Counter()
    for e in events:
        if isinstance(e, JobSubmitted) and e.kind == "instance.migrate":
            jobs[e.targets[0].partition("/")[2]] += 1
    driven = Counter(
        cmd.split()[2] for _, _, cmd in fabric.journal if cmd.startswith("qmp migrate ")
    )
    return [
        f"{vm} migrated {n} times by {jobs[vm]} jobs" for vm, n in driven.items() if n > jobs[vm]
    ]


async def check_log(store: EventStore, fabric: Fabric, acknowledged: list[EventId]) -> None:
    """Every acknowledged event is there (read back by id); no reactor event was
    committed outside its orchestrator's term; no job step ran twice. A read cut
    short (the store moving to another etcd member under it) is read again."""
    for attempt in range(10):
        try:
            return await _check_log(store, fabric, acknowledged)
        except (EtcdUnavailable, *WATCH_ERRORS):
            if attempt == 9:
                raise
            await asyncio.sleep(1.0)


async def _check_log(store: EventStore, fabric: Fabric, acknowledged: list[EventId]) -> None:
    ids: set[str] = set()
    jobs: list[JobSubmitted | JobUpdated] = []
    async for _, e in store.read_all():
        ids.add(e.id)
        if isinstance(e, JobSubmitted | JobUpdated):
            jobs.append(e)
    lost = [a for a in acknowledged if a not in ids]
    assert not lost, f"acknowledged events lost: {lost}"
    bad = await deposed_writes(store)
    if bad:
        terms = await term_history(store)
        raise AssertionError(f"written by a deposed leader: {bad}; terms {terms}")
    repeats = job_step_repeats(jobs) + migrations_driven_twice(fabric, jobs)
    assert not repeats, f"job steps executed twice: {repeats}"
