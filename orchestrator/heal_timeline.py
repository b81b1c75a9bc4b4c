"""The story of one node loss, read back from the event log: when the node was suspected,
declared lost, fenced, when each of its instances was decided onto its secondary and
started there, and when redundancy was rebuilt.

Pure: events in, figures out; must not read the store itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from events.model import (
    Event,
    InstancePlaced,
    NodeFenced,
    NodeHealth,
    NodeHealthChanged,
    PlacementKind,
    StepSucceeded,
)


@dataclass
class HealTimeline:
    node: str
    crashed_at: float
    suspect_at: float | None = None
    lost_at: float | None = None
    fenced_at: float | None = None
    failover_decided: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # instance -> start-vm done
    reprotected: dict[str, float] = field(default_factory=dict)  # new secondary decided

    def rel(self, t: float | None) -> str:
        return "-" if t is None else f"+{t - self.crashed_at:6.2f}s"

    def back_times(self) -> list[float]:
        return sorted(t - self.crashed_at for t in self.started.values())


def build_timeline(
    *, node: str, crashed_at: float, events: list[tuple[int, Event]]
) -> HealTimeline:
    tl = HealTimeline(node=node, crashed_at=crashed_at)
    failed_over: set[str] = set()
    for _, e in events:
        if e.time < crashed_at:
            continue
        if isinstance(e, NodeHealthChanged) and e.node == node:
            if e.health == NodeHealth.SUSPECT and tl.suspect_at is None:
                tl.suspect_at = e.time
            if e.health == NodeHealth.LOST and tl.lost_at is None:
                tl.lost_at = e.time
        elif isinstance(e, NodeFenced) and e.node == node and tl.fenced_at is None:
            tl.fenced_at = e.time
        elif isinstance(e, InstancePlaced):
            if e.kind == PlacementKind.FAILOVER and e.superseded == node:
                tl.failover_decided.setdefault(e.instance, e.time)
                failed_over.add(e.instance)
            elif e.kind == PlacementKind.HEAL:
                tl.reprotected.setdefault(e.instance, e.time)
        elif (
            isinstance(e, StepSucceeded)
            and e.step == "start-vm"
            and e.key.removeprefix("instance/") in failed_over
        ):
            tl.started.setdefault(e.key.removeprefix("instance/"), e.time)
    return tl


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]
