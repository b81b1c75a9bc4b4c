"""What `corral node evacuate NODE` will do, before it does it: every primary on
the node moves to its secondary (live migration, or failover when stopped), then
every instance whose secondary is the node gets a new one from the allocator,
N+1-safe, the node itself drained so nothing new lands there. The same steps the
evacuate job takes, run on a folded projection.

Pure: no I/O, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from events.ids import EventId, InstanceName, NodeName
from events.model import NodeFlagsSet, PlacementKind
from events.state import ClusterState
from reactors.htools.model import from_state
from reactors.htools.score import n1_failures
from reactors.placement.allocator import choose_new_secondary
from reactors.placement.what_if import planned_placement, project


@dataclass(frozen=True, slots=True, kw_only=True)
class EvacuationMove:
    instance: InstanceName
    kind: str  # "migrate" (primary to its secondary) or "replace-secondary"
    old_primary: NodeName
    old_secondary: NodeName
    new_primary: NodeName
    new_secondary: NodeName
    data_mib: int  # resynced to a new secondary


@dataclass(frozen=True, slots=True, kw_only=True)
class EvacuationPlan:
    node: NodeName
    moves: tuple[EvacuationMove, ...]
    refused: tuple[tuple[InstanceName, str], ...]  # no new secondary, and why
    n1_failures_after: tuple[str, ...]
    state_after: ClusterState

    @property
    def data_mib(self) -> int:
        return sum(m.data_mib for m in self.moves)


def plan_evacuation(*, state: ClusterState, node: NodeName) -> EvacuationPlan:
    projected = project(
        state,
        [NodeFlagsSet(id=EventId("evac-drain"), time=0.0, actor="plan", node=node, drained=True)],
    )
    moves: list[EvacuationMove] = []
    refused: list[tuple[InstanceName, str]] = []
    for name in sorted(n for n, p in projected.placements.items() if p.primary == node):
        p = projected.placements[name]
        projected = project(
            projected,
            [
                planned_placement(
                    instance=name,
                    primary=p.secondary,
                    secondary=p.primary,
                    disks=p.disks,
                    kind=PlacementKind.MIGRATE,
                )
            ],
        )
        moves.append(
            EvacuationMove(
                instance=name,
                kind="migrate",
                old_primary=p.primary,
                old_secondary=p.secondary,
                new_primary=p.secondary,
                new_secondary=p.primary,
                data_mib=0,
            )
        )
    for name in sorted(n for n, p in projected.placements.items() if p.secondary == node):
        p = projected.placements[name]
        choice = choose_new_secondary(state=projected, instance=name)
        if choice.secondary is None:
            refused.append((name, choice.refusal or "no candidate"))
            continue
        projected = project(
            projected,
            [
                planned_placement(
                    instance=name,
                    primary=p.primary,
                    secondary=choice.secondary,
                    disks=p.disks,
                    kind=PlacementKind.REPLACE_SECONDARY,
                )
            ],
        )
        spec = projected.desired.instances.get(name)
        earlier = next((m for m in moves if m.instance == name), None)
        move = EvacuationMove(
            instance=name,
            kind="replace-secondary",
            old_primary=earlier.old_primary if earlier else p.primary,
            old_secondary=earlier.old_secondary if earlier else p.secondary,
            new_primary=p.primary,
            new_secondary=choice.secondary,
            data_mib=spec.disk_mib if spec else 0,
        )
        if earlier is not None:
            moves[moves.index(earlier)] = replace(move, kind="migrate+replace-secondary")
        else:
            moves.append(move)
    return EvacuationPlan(
        node=node,
        moves=tuple(moves),
        refused=tuple(refused),
        n1_failures_after=n1_failures(from_state(state=projected)),
        state_after=projected,
    )
