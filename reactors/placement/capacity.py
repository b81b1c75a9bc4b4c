"""How many more instances fit (what Ganeti's hspace answers): allocate instances
of a given spec one after another with the same allocator the placer uses,
N+1-safe, on a projection of the cluster, until the allocator refuses; with a
tiered list of specs, go on with the next smaller spec when one no longer fits.
Hypothetical nodes can be added first ("what if we buy two more nodes").
On an htools file, each node's spindle room (`reactors.htools.state.spindle_room`)
is kept: every allocation takes one disk copy from its primary and one from its
secondary, and a node with none left takes no more (hypothetical nodes have no
limit); and with `keep_free_mib` (htools: 1) every node keeps that much free
memory and disk (`reactors.placement.allocator`).

Each allocation scores every node pair at once with `reactors.placement.pair_scores`
(numpy), which chooses what `reactors.placement.allocator.choose_pair` chooses; the
last request of each tier (the refusal) goes through `choose_pair` itself, and
so does every request of a tagged spec.

Pure: no I/O, no logging; the live state is never changed, only folded copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from events.ids import EventId, InstanceName, NodeName
from events.model import (
    DiskPlacement,
    Event,
    InstanceDeclared,
    NodeDeclared,
    PlacementKind,
)
from events.specs import DiskSpec, InstanceSpec, NodeSpec
from events.state import ClusterState
from reactors.htools.state import SpindleRoom
from reactors.placement.allocator import choose_pair, new_instance
from reactors.placement.pair_scores import Allocator
from reactors.placement.what_if import planned_placement, project


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
    # the disk copies each node may still take after them (nodes with a limit)
    spindle_room: dict[NodeName, SpindleRoom]

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
    return project(state, events), tuple(names)


def capacity(
    *,
    state: ClusterState,
    specs: tuple[Spec, ...],
    add_nodes: tuple[NewNode, ...] = (),
    limit: int = 100_000,
    spindle_room: Mapping[NodeName, SpindleRoom] | None = None,
    keep_free_mib: int = 0,
) -> CapacityResult:
    projected, added = with_new_nodes(state=state, nodes=add_nodes)
    room = dict(spindle_room or {})
    tiers = []
    n = 0
    for spec in specs:
        count = 0
        why = "limit reached"
        fast = Allocator.of(
            state=projected,
            inst=new_instance(_probe(spec, 0)),
            spindle_room=room,
            keep_free_mib=keep_free_mib,
        )
        if fast is not None:
            # Every pair at once per allocation; the placements are folded in one go.
            picks: list[tuple[InstanceSpec, NodeName, NodeName]] = []
            while n < limit:
                pick = fast.pick()
                if pick is None:
                    break
                fast.place(pick)
                n += 1
                picks.append((_probe(spec, n), pick.primary, pick.secondary))
                _take_copies(room, pick.primary, pick.secondary)
            projected = _with_placed(projected, picks)
            count = len(picks)
        # Pair by pair from here: a tagged spec all along, and otherwise one last
        # request, so the refusal is the allocator's own words (and, should the
        # two allocators ever disagree, the pair-by-pair one has the last say).
        while n < limit:
            inst = _probe(spec, n + 1)
            choice = choose_pair(
                state=projected, spec=inst, spindle_room=room, keep_free_mib=keep_free_mib
            )
            if choice.primary is None or choice.secondary is None:
                why = choice.refusal or "refused"
                break
            n += 1
            projected = _with_placed(projected, [(inst, choice.primary, choice.secondary)])
            _take_copies(room, choice.primary, choice.secondary)
            count += 1
        tiers.append(TierResult(spec=spec, count=count, stopped_by=why))
    return CapacityResult(tiers=tuple(tiers), added_nodes=added, state=projected, spindle_room=room)


def _take_copies(room: dict[NodeName, SpindleRoom], *nodes: NodeName) -> None:
    """One disk copy less of room on each node (those with a limit)."""
    for node in nodes:
        left = room.get(node)
        if left is not None:
            room[node] = replace(left, copies=left.copies - 1)


def _probe(spec: Spec, n: int) -> InstanceSpec:
    return InstanceSpec(
        name=InstanceName(f"capacity-probe-{n}"),
        memory_mib=spec.memory_mib,
        vcpus=spec.vcpus,
        disks=(DiskSpec(size_mib=spec.disk_mib),),
    )


def _with_placed(
    state: ClusterState, placed: list[tuple[InstanceSpec, NodeName, NodeName]]
) -> ClusterState:
    """`state` with each probe declared and placed, in one fold."""
    events: list[Event] = []
    for inst, primary, secondary in placed:
        events.append(
            InstanceDeclared(
                id=EventId(f"capacity-decl-{inst.name}"), time=0.0, actor="capacity", spec=inst
            )
        )
        events.append(
            planned_placement(
                instance=inst.name,
                primary=primary,
                secondary=secondary,
                # Minors/ports do not matter for capacity.
                disks=(DiskPlacement(index=0, size_mib=inst.disk_mib, minor=0, port=0),),
                kind=PlacementKind.INITIAL,
                actor="capacity",
            )
        )
    return project(state, events)
