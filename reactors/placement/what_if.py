"""Hypothetical cluster states for the planners: a folded `ClusterState` with
planned changes applied (an instance declared, placed or moved, a node drained),
so a planner can ask the allocator about the state its own earlier steps leave.

Pure: no I/O, no logging; nothing here is appended to the event log, and the events
built here never leave the planner that folds them.
"""

from __future__ import annotations

from collections.abc import Iterable

from events.ids import EventId, InstanceName, NodeName
from events.model import DiskPlacement, Event, InstancePlaced, PlacementKind
from events.projection import fold
from events.state import ClusterState


def planned_placement(
    *,
    instance: InstanceName,
    primary: NodeName,
    secondary: NodeName,
    disks: tuple[DiskPlacement, ...],
    kind: PlacementKind,
    actor: str = "plan",
) -> InstancePlaced:
    """The placement event a planned step would lead to."""
    return InstancePlaced(
        id=EventId(f"{actor}-{kind.value}-{instance}"),
        time=0.0,
        actor=actor,
        instance=instance,
        primary=primary,
        secondary=secondary,
        disks=disks,
        kind=kind,
    )


def project(state: ClusterState, events: Iterable[Event]) -> ClusterState:
    """`state` with `events` folded in, each at its own revision after the state's."""
    numbered = [(state.revision + i, e) for i, e in enumerate(events, start=1)]
    return fold(state, numbered) if numbered else state
