"""The story of one node loss, read back from the event log: when the node was suspected,
declared lost, fenced, when each of its instances was decided onto its secondary and
started there, and when redundancy was rebuilt.

Pure: events in, figures out; must not read the store itself. The demo and the heal
bench read it back after a crash; `/metrics` keeps one folded as events arrive.
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
    """The phases of one node loss, folded one event at a time (`on_event`).

    With `node` given (the demo and the heal bench, which crashed it at
    `crashed_at`), only that node's loss is followed and events before `crashed_at`
    are ignored. Without it (`/metrics`), the timeline follows the latest node loss:
    a node turning suspect, or another node declared lost, starts a new one."""

    node: str | None = None
    crashed_at: float | None = None
    suspect_at: float | None = None
    lost_at: float | None = None
    fenced_at: float | None = None
    failover_decided: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # instance -> start-vm done
    reprotected: dict[str, float] = field(default_factory=dict)  # new secondary decided
    follows_latest: bool = field(init=False)

    def __post_init__(self) -> None:
        self.follows_latest = self.node is None

    def on_event(self, e: Event) -> None:
        if self.crashed_at is not None and e.time < self.crashed_at:
            return
        if isinstance(e, NodeHealthChanged):
            self._health(e)
        elif isinstance(e, NodeFenced) and e.node == self.node and self.fenced_at is None:
            self.fenced_at = e.time
        elif isinstance(e, InstancePlaced):
            if e.kind == PlacementKind.FAILOVER and e.superseded == self.node:
                self.failover_decided.setdefault(e.instance, e.time)
            elif e.kind == PlacementKind.HEAL:
                self.reprotected.setdefault(e.instance, e.time)
        elif isinstance(e, StepSucceeded) and e.step == "start-vm":
            name = e.key.removeprefix("instance/")
            if name in self.failover_decided:
                self.started.setdefault(name, e.time)

    def _health(self, e: NodeHealthChanged) -> None:
        if e.health not in (NodeHealth.SUSPECT, NodeHealth.LOST):
            return
        if self.follows_latest and (e.health == NodeHealth.SUSPECT or e.node != self.node):
            self._restart(e.node)
        if e.node != self.node:
            return
        if e.health == NodeHealth.SUSPECT and self.suspect_at is None:
            self.suspect_at = e.time
        if e.health == NodeHealth.LOST and self.lost_at is None:
            self.lost_at = e.time

    def _restart(self, node: str) -> None:
        self.node = node
        self.suspect_at = self.lost_at = self.fenced_at = None
        self.failover_decided, self.started, self.reprotected = {}, {}, {}

    def rel(self, t: float | None) -> str:
        return "-" if t is None else f"+{t - (self.crashed_at or 0.0):6.2f}s"

    def back_times(self) -> list[float]:
        return sorted(t - (self.crashed_at or 0.0) for t in self.started.values())

    def phases(self) -> dict[str, float]:
        """Seconds from the first sign (suspect, else lost) to each phase reached."""
        origin = self.suspect_at if self.suspect_at is not None else self.lost_at
        if origin is None:
            return {}
        marks = {"suspect": self.suspect_at, "lost": self.lost_at, "fenced": self.fenced_at}
        if self.started:
            marks["first_back"] = min(self.started.values())
            marks["last_back"] = max(self.started.values())
        return {phase: t - origin for phase, t in marks.items() if t is not None}


def build_timeline(
    *, node: str, crashed_at: float, events: list[tuple[int, Event]]
) -> HealTimeline:
    tl = HealTimeline(node=node, crashed_at=crashed_at)
    for _, e in events:
        tl.on_event(e)
    return tl


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]
