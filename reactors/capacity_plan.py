"""How many more instances fit (what Ganeti's hspace answers): allocate instances
of a given spec one after another with the same allocator the placer uses,
N+1-safe, on a projection of the cluster, until the allocator refuses; with a
tiered list of specs, go on with the next smaller spec when one no longer fits.
Hypothetical nodes can be added first ("what if we buy two more nodes").

Pure: no I/O, no logging; the live state is never changed, only folded copies.
Comes after `events.projection` (or `reactors.htools_state` for a snapshot file)
and `reactors.placement_bridge` (the allocator); printed by the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.ids import EventId, InstanceName, NodeName
from events.model import (
    DiskPlacement,
    Event,
    InstanceDeclared,
    InstancePlaced,
    NodeDeclared,
    PlacementKind,
)
from events.projection import fold
from events.specs import DiskSpec, InstanceSpec, NodeSpec
from events.state import ClusterState
from reactors.placement_bridge import choose_pair


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    memory_mib: int
    disk_mib: int
    vcpus: int

    def label(self) -> str:
        return f"{self.memory_mib}M/{self.disk_mib}M/{self.vcpus}cpu"


@dataclass(frozen=True, slots=True, kw_only=True)
class NewNode:
    memory_mib: int
    disk_mib: int
    cpus: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TierResult:
    spec: Spec
    count: int
    stopped_by: str  # the allocator's refusal that ended this tier


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityResult:
    tiers: tuple[TierResult, ...]
    added_nodes: tuple[NodeName, ...]
    state: ClusterState  # the projection with every allocated instance

    @property
    def total(self) -> int:
        return sum(t.count for t in self.tiers)


def with_new_nodes(
    *, state: ClusterState, nodes: tuple[NewNode, ...]
) -> tuple[ClusterState, tuple[NodeName, ...]]:
    names: list[NodeName] = []
    events: list[Event] = []
    existing = set(state.desired.nodes)
    i = 0
    for node in nodes:
        i += 1
        while NodeName(f"new{i}") in existing:
            i += 1
        name = NodeName(f"new{i}")
        names.append(name)
        events.append(
            NodeDeclared(
                id=EventId(f"capacity-node-{name}"),
                time=0.0,
                actor="capacity",
                spec=NodeSpec(
                    name=name,
                    address=name,
                    memory_mib=node.memory_mib,
                    disk_mib=node.disk_mib,
                    cpus=node.cpus,
                    host_memory_mib=min(1024, node.memory_mib // 8),
                ),
            )
        )
    if not events:
        return state, ()
    return fold(state, [(state.revision + 1, e) for e in events]), tuple(names)


def capacity(
    *,
    state: ClusterState,
    specs: tuple[Spec, ...],
    add_nodes: tuple[NewNode, ...] = (),
    limit: int = 100_000,
) -> CapacityResult:
    projected, added = with_new_nodes(state=state, nodes=add_nodes)
    tiers = []
    n = 0
    rev = projected.revision
    for spec in specs:
        count = 0
        why = "limit reached"
        while n < limit:
            n += 1
            name = InstanceName(f"capacity-probe-{n}")
            inst = InstanceSpec(
                name=name,
                memory_mib=spec.memory_mib,
                vcpus=spec.vcpus,
                disks=(DiskSpec(size_mib=spec.disk_mib),),
            )
            choice = choose_pair(state=projected, spec=inst)
            if choice.primary is None or choice.secondary is None:
                why = choice.refusal or "refused"
                break
            rev += 1
            projected = fold(
                projected,
                [
                    (
                        rev,
                        InstanceDeclared(
                            id=EventId(f"capacity-decl-{n}"), time=0.0, actor="capacity", spec=inst
                        ),
                    ),
                    (
                        rev,
                        InstancePlaced(
                            id=EventId(f"capacity-placed-{n}"),
                            time=0.0,
                            actor="capacity",
                            instance=name,
                            primary=choice.primary,
                            secondary=choice.secondary,
                            # Minors/ports do not matter for capacity.
                            disks=(
                                DiskPlacement(index=0, size_mib=spec.disk_mib, minor=0, port=0),
                            ),
                            kind=PlacementKind.INITIAL,
                        ),
                    ),
                ],
            )
            count += 1
        tiers.append(TierResult(spec=spec, count=count, stopped_by=why))
    return CapacityResult(tiers=tuple(tiers), added_nodes=added, state=projected)
