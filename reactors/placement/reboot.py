"""Rolling reboots (what Ganeti's hroller answers): groups of nodes that can go
down together.

Without evacuation, a group never holds both nodes of one instance (every
instance keeps one copy of its disks up), and the primaries of the group's nodes
fit, by memory, on their secondaries outside the group, where they are
live-migrated before the reboot. With evacuation, each node's primaries and
secondaries move to nodes outside its group before it goes down. Groups are
formed with an aggregate check (the memory of the primaries and the disk of all
instances fit in what the nodes outside have free), then each group is checked
the way it will be carried out: its nodes drained, then each evacuated in turn
by `reactors.placement.evacuation` (the allocator picks every new secondary, N+1 kept);
a group that does not evacuate completely is split into single nodes, and a node
that cannot be evacuated even alone is left out with the allocator's reason.
Each group is checked against the current placement, as hroller does. Offline
nodes are left out; drained nodes take part.

Pure: no I/O, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.ids import EventId, InstanceName, NodeName
from events.model import NodeFlagsSet
from events.state import ClusterState
from reactors.htools.model import from_state
from reactors.htools.score import n1_failures
from reactors.placement.evacuation import EvacuationMove, plan_evacuation
from reactors.placement.node_loads import loads
from reactors.placement.what_if import project


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    instance: InstanceName
    source: NodeName
    target: NodeName


@dataclass(frozen=True, slots=True, kw_only=True)
class RebootGroup:
    nodes: tuple[NodeName, ...]
    migrations: tuple[Move, ...]  # primaries live-migrated to their secondaries first
    # with evacuation: every move that empties the group, in order
    evacuation: tuple[EvacuationMove, ...] = ()

    @property
    def data_mib(self) -> int:
        """Disk data copied to new secondaries to evacuate the group."""
        return sum(m.data_mib for m in self.evacuation)


@dataclass(frozen=True, slots=True, kw_only=True)
class RebootPlan:
    groups: tuple[RebootGroup, ...]
    evacuate: bool
    skipped: tuple[str, ...]  # nodes left out, with why


def plan_reboots(*, state: ClusterState, evacuate: bool = False) -> RebootPlan:
    load = loads(state)
    skipped = [f"{n}: offline" for n, s in sorted(state.desired.nodes.items()) if s.offline]
    candidates = [n for n, s in sorted(state.desired.nodes.items()) if not s.offline]
    peers: dict[NodeName, set[NodeName]] = {n: set() for n in candidates}
    primaries: dict[NodeName, list[InstanceName]] = {n: [] for n in candidates}
    for name, p in sorted(state.placements.items()):
        if name not in state.desired.instances:
            continue
        if p.primary in peers and p.secondary in peers:
            peers[p.primary].add(p.secondary)
            peers[p.secondary].add(p.primary)
        if p.primary in primaries:
            primaries[p.primary].append(name)
    # Most constrained first (DSatur-like): many peers, much memory to move.
    order = sorted(
        candidates,
        key=lambda n: (-len(peers[n]), -load[n].mem_primary, n),
    )
    groups: list[list[NodeName]] = []
    incoming: list[dict[NodeName, int]] = []
    for node in order:
        placed = False
        for gi, group in enumerate(groups):
            if peers[node] & set(group):
                continue
            extra = _fits(
                state=state,
                node=node,
                group=group,
                incoming=incoming[gi],
                primaries=primaries,
                evacuate=evacuate,
            )
            if extra is None:
                continue
            group.append(node)
            for target, mem in extra.items():
                incoming[gi][target] = incoming[gi].get(target, 0) + mem
            placed = True
            break
        if not placed:
            extra = _fits(
                state=state,
                node=node,
                group=[],
                incoming={},
                primaries=primaries,
                evacuate=evacuate,
            )
            if extra is None:
                skipped.append(
                    f"{node}: its primaries do not fit elsewhere even alone; "
                    "add capacity or stop some instances first"
                )
                continue
            groups.append([node])
            incoming.append(dict(extra))
    evacuations: dict[tuple[NodeName, ...], tuple[EvacuationMove, ...]] = {}
    if evacuate:
        evacuations = _checked(state=state, groups=groups, skipped=skipped)
        groups = [list(g) for g in evacuations]
    result = []
    for group in groups:
        moves = tuple(
            Move(instance=i, source=n, target=state.placements[i].secondary)
            for n in sorted(group)
            for i in primaries[n]
        )
        key = tuple(sorted(group))
        result.append(RebootGroup(nodes=key, migrations=moves, evacuation=evacuations.get(key, ())))
    result.sort(key=lambda g: (-len(g.nodes), g.nodes))
    return RebootPlan(groups=tuple(result), evacuate=evacuate, skipped=tuple(skipped))


def _fits(
    *,
    state: ClusterState,
    node: NodeName,
    group: list[NodeName],
    incoming: dict[NodeName, int],
    primaries: dict[NodeName, list[InstanceName]],
    evacuate: bool,
) -> dict[NodeName, int] | None:
    """The memory `node`'s primaries would add to each target if `node` joined
    `group`, or None when it does not fit."""
    load = loads(state)
    down = set(group) | {node}
    extra: dict[NodeName, int] = {}
    running = [i for i in primaries[node] if state.desired.instances[i].power.value == "running"]
    if evacuate:
        up = [n for n in load if n not in down and not state.desired.nodes[n].offline]
        mem_free = sum(load[n].mem_free - incoming.get(n, 0) for n in up)
        disk_free = sum(load[n].disk_total - load[n].disk_used for n in up)
        mem_need = sum(state.desired.instances[i].memory_mib for i in running)
        disk_need = sum(
            state.desired.instances[i].disk_mib
            for i, p in state.placements.items()
            if node in (p.primary, p.secondary) and i in state.desired.instances
        )
        if mem_need > mem_free or disk_need > disk_free:
            return None
        # Spread the memory in aggregate: charge it to the emptiest node for the
        # bookkeeping of later group members.
        if up and mem_need:
            target = max(up, key=lambda n: load[n].mem_free - incoming.get(n, 0))
            extra[target] = mem_need
        return extra
    for i in running:
        target = state.placements[i].secondary
        if target in down:
            return None
        extra[target] = extra.get(target, 0) + state.desired.instances[i].memory_mib
    for target, mem in extra.items():
        if load[target].mem_free - incoming.get(target, 0) < mem:
            return None
    return extra


def _evacuate(
    *, state: ClusterState, nodes: list[NodeName]
) -> tuple[tuple[EvacuationMove, ...], str | None]:
    """The moves that empty `nodes` (all drained first, then each evacuated in
    turn), and why that fails (None when every instance moved and N+1 holds)."""
    projected = project(
        state,
        [
            NodeFlagsSet(
                id=EventId(f"reboot-drain-{n}"), time=0.0, actor="plan", node=n, drained=True
            )
            for n in nodes
        ],
    )
    before = set(n1_failures(from_state(state=state)))
    moves: list[EvacuationMove] = []
    for node in nodes:
        plan = plan_evacuation(state=projected, node=node)
        if plan.refused:
            name, why = plan.refused[0]
            return tuple(moves), f"{name} gets no new secondary off {node}: {why}"
        moves.extend(plan.moves)
        projected = plan.state_after
    new_failures = set(n1_failures(from_state(state=projected))) - before
    if new_failures:
        return tuple(moves), f"N+1 fails on {', '.join(sorted(new_failures))} once evacuated"
    return tuple(moves), None


def _checked(
    *, state: ClusterState, groups: list[list[NodeName]], skipped: list[str]
) -> dict[tuple[NodeName, ...], tuple[EvacuationMove, ...]]:
    """The groups that evacuate completely, with their moves; a group that does
    not is split into single nodes, and a node that cannot be evacuated alone is
    skipped."""
    out: dict[tuple[NodeName, ...], tuple[EvacuationMove, ...]] = {}
    for group in groups:
        moves, why = _evacuate(state=state, nodes=sorted(group))
        if why is None:
            out[tuple(sorted(group))] = moves
            continue
        for node in sorted(group):
            if len(group) > 1:
                moves, why = _evacuate(state=state, nodes=[node])
            if why is None:
                out[(node,)] = moves
            else:
                skipped.append(f"{node}: cannot be evacuated: {why}")
    return out
