"""What `make demo` shows of a crash of the leader's node, gathered while it
happens: the demo's own fold of the event log (`Follower`), the handover as seen
in etcd's leader key (`watch_handover`) and in the new leader's log (its first
reconcile), and one timeline that puts the handover beside the heal phases.

Wiring only; the product never imports it. Reads; never writes an event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from events.election import WATCH_ERRORS, LeaderRecord, read_leadership
from events.loading import follow_batches
from events.state import ClusterState
from events.store import EtcdUnavailable, EventStore
from orchestrator.heal_timeline import HealTimeline, percentile


@dataclass
class Follower:
    """The cluster as the demo sees it: every event folded as it arrives."""

    state: ClusterState

    async def run(self, store: EventStore) -> None:
        async for _, state in follow_batches(store, self.state):
            self.state = state


@dataclass
class Handover:
    """One leader's end and the next one's start, in wall time."""

    old: LeaderRecord
    crashed_at: float
    lease_gone_at: float | None = None  # the old leader key seen gone
    new: LeaderRecord | None = None
    first_reconcile_at: float | None = None


async def watch_handover(store: EventStore, h: Handover, *, timeout: float = 180.0) -> None:
    """Poll the leader key (every 0.1 s, through etcd members that survive the
    crash) until a newer term holds it: note when the old key was first seen gone
    and the new leader's record. The old key went no later than the new leader
    campaigned (`since`), whichever poll saw what."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            leader, _ = await asyncio.wait_for(read_leadership(store), 2.0)
        except (EtcdUnavailable, TimeoutError, *WATCH_ERRORS):
            await asyncio.sleep(0.1)
            continue
        now = time.time()
        if h.lease_gone_at is None and (leader is None or leader.term != h.old.term):
            h.lease_gone_at = now
        if leader is not None and leader.term > h.old.term:
            h.new = leader
            h.lease_gone_at = min(h.lease_gone_at or now, leader.since)
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no new leader {timeout:.0f}s after {h.old.member.id} was lost")


def print_timeline(
    out: Callable[[str], None], *, node: str, h: Handover, tl: HealTimeline, reprotected: str
) -> dict[str, float]:
    """The handover and the heal phases, in the order they happened, seconds after
    the crash; returns the phases it printed (name -> seconds)."""
    t0 = h.crashed_at
    marks: list[tuple[float, str, str]] = []

    def mark(at: float | None, phase: str, text: str) -> None:
        if at is not None:
            marks.append((at - t0, phase, text))

    mark(h.lease_gone_at, "old leader lost", f"{h.old.member.id}'s lease expired: no leader")
    if h.new is not None:
        mark(
            h.new.since,
            "new leader elected",
            f"{h.new.member.id} leads (term {h.new.term}, was {h.old.term})",
        )
    mark(h.first_reconcile_at, "first reconcile", "the new leader's first reconcile pass")
    mark(tl.suspect_at, "suspect", f"{node} suspected")
    mark(tl.lost_at, "lost", f"{node} declared lost (its DRBD peers lost it too)")
    mark(tl.fenced_at, "fenced", f"{node} fenced (agent off)")
    back = tl.back_times()
    if back:
        marks.append((back[0], "first back", "first instance back on its secondary"))
        marks.append(
            (
                back[-1],
                "all back",
                f"all {len(back)} back (p50 {percentile(back, 50):.2f}s)",
            )
        )
    if tl.reprotected:
        mark(
            max(tl.reprotected.values()),
            "new secondaries",
            f"new secondaries decided for {len(tl.reprotected)}",
        )
    out(f"  +  0.00s  {'crash':18s}  {node} crashed, with the leader {h.old.member.id} on it")
    # By time; at the same time, in the order they can happen (marked in that order).
    order = {phase: n for n, (_, phase, _) in enumerate(marks)}
    for seconds, phase, text in sorted(marks, key=lambda m: (m[0], order[m[1]])):
        side = (
            "handover"
            if phase in ("old leader lost", "new leader elected", "first reconcile")
            else "heal"
        )
        out(f"  +{seconds:6.2f}s  {phase:18s}  {text}  [{side}]")
    out(f"  {reprotected}")
    return {phase: seconds for seconds, phase, _ in marks}
