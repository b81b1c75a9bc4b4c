"""Observation: every node is probed once per interval with one combined read
(facts, LVs, DRBD status, VM processes); a NodeObserved event is appended only when
something changed. The probe results also feed node health: reachability is
recorded here, on the loop watch's stall-free clock, and judged in
`reactors.healer`. A failed probe whose window overlapped a stall of this process
is no evidence (safety rule 9): it is not counted.

Does no planning.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import structlog

from events.ids import NodeName, new_event_id
from events.model import (
    DrbdResourceObs,
    NodeFacts,
    NodeHealth,
    NodeHealthChanged,
    NodeObserved,
    NodeRecovered,
    VmObs,
    VolumeObs,
)
from events.state import NodeObservation
from reactors.context import ReactorContext
from reactors.seams import NodeSnapshot

log = structlog.get_logger("corral.prober")


@dataclass
class ProbeRecord:
    # Times on the loop watch's stall-free clock (`ReactorContext.trusted_now`).
    last_ok: float | None = None
    failing_since: float | None = None
    # When the fold last held what this node reported (its probe's changes
    # appended, or nothing to append): its word about its DRBD peers counts as
    # evidence from then on.
    reported_at: float | None = None
    last_error: str = ""
    last_boot_id: str = ""
    probes: int = 0
    # When the last probe of the node ended, answered or not, whoever asked for
    # it (this loop, or a worker verifying its steps), on the process's monotonic
    # clock (`LoopWatch.clock`).
    ended_at: float | None = None
    # Per section ("volumes", "drbd", "vms"): the log's tuple and the probe's
    # (the parser's cached one) last found equal. Both unchanged, they still
    # are, without comparing them item by item.
    same: dict[str, tuple[object, object]] = field(default_factory=dict)


@dataclass
class Prober:
    ctx: ReactorContext
    records: dict[NodeName, ProbeRecord] = field(default_factory=dict)
    _locks: dict[NodeName, asyncio.Lock] = field(default_factory=dict)
    _requested: dict[NodeName, int] = field(default_factory=dict)
    _covered: dict[NodeName, int] = field(default_factory=dict)

    def record(self, node: NodeName) -> ProbeRecord:
        return self.records.setdefault(node, ProbeRecord())

    async def run_node(self, node: NodeName) -> None:
        """Probe `node` every interval until it is no longer declared: an interval
        after its last probe ended, so that a node a worker has just probed (to
        verify its steps) is not probed again at once; while workers act on it
        every second, that was half of a converging cluster's probes."""
        interval = self.ctx.settings.probe_interval_s
        while not self.ctx.stopping and node in self.ctx.state.desired.nodes:
            spec = self.ctx.state.desired.nodes[node]
            ended = self.record(node).ended_at
            since = None if ended is None else self.ctx.watch.clock() - ended
            if since is not None and 0 <= since < interval:
                await asyncio.sleep(interval - since)
                continue
            if not spec.offline:
                try:
                    await self.probe(node)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The loop must outlive any one probe (etcd slow to answer, the
                    # fold lagging): a node nobody probes would look dead.
                    log.exception("probe pass failed; probing again", node=node)
            await asyncio.sleep(interval)

    async def probe(self, node: NodeName, *, causation: str | None = None) -> int | None:
        """Probe now; append what changed. Returns the revision written, if any.

        Requests are coalesced: a caller is satisfied by any probe that started
        after it asked, so twenty workers finishing steps on one node cause one or
        two probes, not twenty in a row."""
        asked = self._requested[node] = self._requested.get(node, 0) + 1
        lock = self._locks.setdefault(node, asyncio.Lock())
        async with lock:
            if self._covered.get(node, 0) >= asked:
                return None
            started_for = self._requested[node]
            try:
                return await self._probe_once(node)
            finally:
                self._covered[node] = started_for
                self.record(node).ended_at = self.ctx.watch.clock()

    async def _probe_once(self, node: NodeName) -> int | None:
        rec = self.record(node)
        watch = self.ctx.watch
        began, trusted_began = watch.clock(), self.ctx.trusted_now()
        try:
            # The deadline in this task (not wait_for's task of its own, which a
            # probe cancelled twice at a term's end left running, unwatched).
            async with asyncio.timeout(self.ctx.settings.probe_timeout_s):
                snap = await self.ctx.nodes.probe(node)
        except Exception as exc:  # unreachable, timeout, unparsable output
            _still_cancelled()
            if watch.stalled_between(began, watch.clock()):
                log.info("probe failed during a stall of this process: no evidence", node=node)
                return None
            rec.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if rec.failing_since is None:
                rec.failing_since = trusted_began
                log.warning("probe failed", node=node, error=rec.last_error)
            return None
        now = self.ctx.now()
        answered = rec.last_ok = self.ctx.trusted_now()
        rec.failing_since = None
        rec.last_error = ""
        rec.probes += 1
        events: list[NodeObserved | NodeHealthChanged | NodeRecovered] = []
        current = self.ctx.state.observed.get(node)
        changed = _diff(current, snap, same=rec.same)
        if changed is not None:
            events.append(
                NodeObserved(
                    id=new_event_id(),
                    time=now,
                    actor=self.ctx.actor,
                    node=node,
                    facts=changed.facts,
                    volumes=changed.volumes,
                    drbd=changed.drbd,
                    vms=changed.vms,
                )
            )
        health = current.health if current else NodeHealth.UNKNOWN
        if health.down:
            events.append(
                NodeRecovered(
                    id=new_event_id(),
                    time=now,
                    actor=self.ctx.actor,
                    node=node,
                    boot_id=snap.facts.boot_id,
                    reason=f"answers again after being {health.value}",
                )
            )
        elif health != NodeHealth.ONLINE:
            events.append(
                NodeHealthChanged(
                    id=new_event_id(),
                    time=now,
                    actor=self.ctx.actor,
                    node=node,
                    health=NodeHealth.ONLINE,
                    reason="probe succeeded",
                )
            )
        rec.last_boot_id = snap.facts.boot_id
        if not events:
            rec.reported_at = answered
            return None
        revision = await self.ctx.append(events)
        rec.reported_at = answered
        return revision


def _still_cancelled() -> None:
    """Raise again the cancellation of this task that a failure stands in for: on
    Python 3.11 the SSH command's own asyncio.wait_for raises the failure instead
    of the cancellation when both land in one turn (a connect refused as a term
    ends), and the probe would then go on as if nothing had asked it to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True, slots=True, kw_only=True)
class _Changed:
    facts: NodeFacts | None = None
    volumes: tuple[VolumeObs, ...] | None = None
    drbd: tuple[DrbdResourceObs, ...] | None = None
    vms: tuple[VmObs, ...] | None = None


# A real node's free memory (MemAvailable: page cache, slab) moves at every probe;
# recorded each time it was one event per node per probe interval, 3.5 million a
# day at 40 nodes, etcd's whole quota in days. Free memory and free VG space are
# recorded when they moved by more than this share of the total (or anything else
# in the facts changed): nothing decides on them, people read them.
FREE_SPACE_STEP = 0.02


def facts_changed(old: NodeFacts | None, new: NodeFacts) -> bool:
    if old is None:
        return True
    if replace(old, memory_free_mib=0, vg_free_mib=0) != replace(
        new, memory_free_mib=0, vg_free_mib=0
    ):
        return True
    mem_step = max(new.memory_total_mib * FREE_SPACE_STEP, 1)
    vg_step = max(new.vg_size_mib * FREE_SPACE_STEP, 1)
    return (
        abs(old.memory_free_mib - new.memory_free_mib) >= mem_step
        or abs(old.vg_free_mib - new.vg_free_mib) >= vg_step
    )


def _diff(
    current: NodeObservation | None,
    snap: NodeSnapshot,
    *,
    same: dict[str, tuple[object, object]],
) -> _Changed | None:
    """The parts of `snap` that differ from what the log already says."""
    if current is None:
        return _Changed(facts=snap.facts, volumes=snap.volumes, drbd=snap.drbd, vms=snap.vms)
    changed = _Changed(
        facts=snap.facts if facts_changed(current.facts, snap.facts) else None,
        volumes=None if _same(same, "volumes", current.volumes, snap.volumes) else snap.volumes,
        drbd=None if _same(same, "drbd", current.drbd, snap.drbd) else snap.drbd,
        vms=None if _same(same, "vms", current.vms, snap.vms) else snap.vms,
    )
    if changed == _Changed():
        return None
    return changed


def _same(
    same: dict[str, tuple[object, object]],
    section: str,
    logged: tuple[object, ...],
    probed: tuple[object, ...],
) -> bool:
    known = same.get(section)
    if known is not None and known[0] is logged and known[1] is probed:
        return True
    if tuple(logged) != probed:
        return False
    same[section] = (logged, probed)
    return True
