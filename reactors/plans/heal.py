"""Self-healing decisions after node loss, as pure functions of the folded state:
is an unreachable node dead or only cut off from us, which instances fail over to
their secondaries, which cannot and why.

Pure: no I/O, no logging, no clocks (callers pass `now`). Must not promote or start
anything: these functions only propose placements.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.ids import InstanceName, NodeName
from events.model import NodeHealth
from events.state import ClusterState
from reactors.naming import disk_name
from reactors.plans.instance import UP_TO_DATE, drbd_on, node_actionable


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    health: NodeHealth
    detail: str
    seen_by: tuple[NodeName, ...] = ()  # peers whose DRBD links to it are up


def drbd_peers_of(state: ClusterState, node: NodeName) -> set[NodeName]:
    peers: set[NodeName] = set()
    for placement in state.placements.values():
        if placement.primary == node:
            peers.add(placement.secondary)
        elif placement.secondary == node:
            peers.add(placement.primary)
    peers.discard(node)
    return peers


def assess_unreachable(*, state: ClusterState, node: NodeName) -> Verdict:
    """Called once `node` has been unreachable for longer than the lost timeout.
    Safety rule 5: if a DRBD peer we can reach still has a Connected link to it, the
    node is alive and only partitioned from us. Otherwise it is lost (fence next)."""
    seen_by: list[NodeName] = []
    asked: list[NodeName] = []
    for peer in sorted(drbd_peers_of(state, node)):
        if not node_actionable(state, peer):
            continue
        obs = state.observed.get(peer)
        if obs is None:
            continue
        links = [link for res in obs.drbd for link in res.peers if link.peer == node]
        if not links:
            continue
        asked.append(peer)
        if any(link.connection == "Connected" for link in links):
            seen_by.append(peer)
    if seen_by:
        return Verdict(
            health=NodeHealth.PARTITIONED,
            detail=(
                f"unreachable from the orchestrator but DRBD peers {', '.join(seen_by)} "
                "still see it connected: leaving its instances alone"
            ),
            seen_by=tuple(seen_by),
        )
    if asked:
        detail = f"unreachable, and its DRBD peers {', '.join(asked)} lost it too"
    else:
        detail = "unreachable, and no reachable DRBD peer shares a disk with it"
    return Verdict(health=NodeHealth.LOST, detail=detail)


@dataclass(frozen=True, slots=True, kw_only=True)
class FailoverDecision:
    instance: InstanceName
    new_primary: NodeName
    new_secondary: NodeName  # the dead node, until re-protection picks another


@dataclass(frozen=True, slots=True, kw_only=True)
class FailoverRefusal:
    instance: InstanceName
    reason: str


def plan_failovers(
    *, state: ClusterState, node: NodeName
) -> tuple[list[FailoverDecision], list[FailoverRefusal]]:
    """For every instance whose primary is the fenced `node`: fail over to the
    secondary only where every disk there was last seen UpToDate (rule 2). The
    caller must have confirmed `node` fenced; this function does not check it."""
    decisions: list[FailoverDecision] = []
    refusals: list[FailoverRefusal] = []
    for name in sorted(state.placements):
        placement = state.placements[name]
        if placement.primary != node or name not in state.desired.instances:
            continue
        s = placement.secondary
        if not node_actionable(state, s):
            refusals.append(
                FailoverRefusal(
                    instance=name,
                    reason=f"its secondary {s} is not reachable either (ERROR_nodedown)",
                )
            )
            continue
        obs = state.observed.get(s)
        bad = []
        for disk in placement.disks:
            res = drbd_on(obs, disk_name(name, disk.index))
            if res is None:
                bad.append(f"{disk_name(name, disk.index)} is not up on {s}")
            elif res.disk != UP_TO_DATE:
                bad.append(f"{disk_name(name, disk.index)} on {s} is {res.disk}")
        if bad:
            refusals.append(
                FailoverRefusal(
                    instance=name,
                    reason="secondary copy not UpToDate, not promoting: " + "; ".join(bad),
                )
            )
            continue
        decisions.append(FailoverDecision(instance=name, new_primary=s, new_secondary=node))
    return decisions, refusals


def instances_needing_new_secondary(*, state: ClusterState) -> list[InstanceName]:
    """Instances whose secondary is fenced, lost or offline: redundancy to rebuild."""
    out = []
    for name in sorted(state.placements):
        if name not in state.desired.instances:
            continue
        s = state.placements[name].secondary
        spec = state.desired.nodes.get(s)
        gone = spec is None or spec.offline or state.node_down(s)
        if gone:
            out.append(name)
    return out
