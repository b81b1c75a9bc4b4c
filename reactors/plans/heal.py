"""Self-healing decisions after node loss, as pure functions of the folded state
and of what the deciding orchestrator hears right now: whether it may judge at all
(a strict majority of the cluster's nodes answer it: safety rule 7), whether an
unreachable node is dead, only cut off from us, or unknown (rule 5, and no evidence
is not evidence of death), whether fencing it now stays within the caps, which
instances fail over to their secondaries, which cannot and why.

Pure: no I/O, no logging, no clocks (callers pass what they heard and when).
Must not promote or start anything: these functions only propose placements.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from events.ids import InstanceName, NodeName
from events.model import NodeHealth
from events.state import ClusterState
from reactors.naming import disk_name
from reactors.plans.queries import UP_TO_DATE, drbd_on, node_actionable, vm_alive, vm_on


def cluster_members(state: ClusterState) -> frozenset[NodeName]:
    """The nodes a majority is counted over: every declared node that is not
    administratively offline (fenced and lost nodes count: they are members that
    do not answer)."""
    return frozenset(n for n, spec in state.desired.nodes.items() if not spec.offline)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reach:
    """Which cluster members the deciding orchestrator hears from right now."""

    members: frozenset[NodeName]
    reachable: frozenset[NodeName]

    @property
    def needed(self) -> int:
        return len(self.members) // 2 + 1

    @property
    def heard(self) -> int:
        return len(self.reachable & self.members)

    @property
    def majority(self) -> bool:
        """A strict majority answers: only then may this orchestrator declare a
        node lost (rule 7). Never true for an empty cluster."""
        return bool(self.members) and self.heard >= self.needed

    def isolation_message(self) -> str:
        silent = sorted(self.members - self.reachable)
        return (
            f"this orchestrator reaches {self.heard} of {len(self.members)} nodes "
            f"({self.needed} needed to judge): it is probably the one cut off, so it "
            "declares no node lost, fences nothing and fails nothing over; held back: "
            + (", ".join(silent) if silent else "nothing")
        )


TIEBREAKER_NOTE = (
    "two-node cluster: a node loss cannot be told from this orchestrator being cut "
    "off (1 of 2 is no majority), so no node will be fenced or failed over "
    "automatically; declare a third node as a tiebreaker (it may be drained and hold "
    "no instances: a third orchestrator/etcd host, or a diskless DRBD 9 quorum peer), "
    "or fail over by hand with `corral node confirm-off`"
)


def needs_tiebreaker(state: ClusterState) -> bool:
    return len(cluster_members(state)) == 2


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


def assess_unreachable(
    *, state: ClusterState, node: NodeName, reporting: Collection[NodeName]
) -> Verdict:
    """Called once `node` has been unreachable for longer than the lost timeout, by
    an orchestrator that reaches a majority. `reporting`: the nodes whose reports
    were read after `node` fell silent (the only peers whose word counts).
    Rule 5: a reporting DRBD peer with a Connected link to it means it is alive,
    only partitioned from us. Rule 7: every reporting peer has lost its link to
    it: lost (fence next). No reporting peer: unknown, never dead."""
    seen_by: list[NodeName] = []
    asked: list[NodeName] = []
    for peer in sorted(drbd_peers_of(state, node)):
        if peer not in reporting or not node_actionable(state, peer):
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
        return Verdict(
            health=NodeHealth.LOST,
            detail=f"unreachable, and its DRBD peers {', '.join(asked)} lost it too",
        )
    return Verdict(
        health=NodeHealth.UNKNOWN,
        detail=(
            "unreachable, and no DRBD peer we reach has reported on it since: "
            "unknown, not dead (no evidence is not evidence of death)"
        ),
    )


def fencing_held_back(
    *, state: ClusterState, node: NodeName, members: frozenset[NodeName], at_once: int
) -> str | None:
    """Why `node` may not be declared lost (and fenced) now, or None. Fences run
    `at_once` nodes at a time (one by default), and never so many that fewer than
    a majority of the members would remain."""

    def health(n: NodeName) -> NodeHealth:
        obs = state.observed.get(n)
        return obs.health if obs else NodeHealth.UNKNOWN

    others = sorted(members - {node})
    fencing = [n for n in others if health(n) == NodeHealth.LOST]
    if len(fencing) >= at_once:
        return f"{', '.join(fencing)} is being fenced first ({at_once} node(s) at a time)"
    down = [n for n in others if health(n).down]
    remaining = len(members) - len(down) - 1
    needed = len(members) // 2 + 1
    if remaining < needed:
        return (
            f"fencing it would leave {remaining} of {len(members)} nodes up, fewer than "
            f"a majority ({needed}); already down: {', '.join(down) or 'none'}"
        )
    return None


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
        bad = _not_up_to_date(state, name=name, dead=node, secondary=s)
        if bad:
            refusals.append(
                FailoverRefusal(
                    instance=name,
                    reason=(
                        f"its data is only on {node} (fenced): " + "; ".join(bad) + "; not "
                        "promoting a copy that is not UpToDate (safety rule 2): it runs "
                        f"again when {node} is back"
                    ),
                )
            )
            continue
        decisions.append(FailoverDecision(instance=name, new_primary=s, new_secondary=node))
    return decisions, refusals


def _not_up_to_date(
    state: ClusterState, *, name: InstanceName, dead: NodeName, secondary: NodeName
) -> list[str]:
    """Why each disk of `name` on `secondary` cannot take over from `dead`: not
    up there (its copy not built yet), or not UpToDate (a resync from `dead`
    that had not finished, with how far it got when the tool says)."""
    obs = state.observed.get(secondary)
    placement = state.placements[name]
    bad = []
    for disk in placement.disks:
        resource = disk_name(name, disk.index)
        res = drbd_on(obs, resource)
        if res is None:
            bad.append(f"no copy of {resource} is up on {secondary} (not built yet, or down)")
        elif res.disk == "Inconsistent":
            link = next((p for p in res.peers if p.peer == dead), None)
            done = (
                f" ({link.percent_in_sync:.1f}% in sync)"
                if link and 0 < link.percent_in_sync < 100
                else ""
            )
            bad.append(
                f"the copy of {resource} on {secondary} is Inconsistent, its sync from "
                f"{dead} not finished{done}"
            )
        elif res.disk != UP_TO_DATE:
            bad.append(f"the copy of {resource} on {secondary} is {res.disk}")
    return bad


def runs_again(state: ClusterState, name: InstanceName) -> bool:
    """`name` runs on its primary (its node came back), or is no longer placed:
    the reason it was not failed over has ended."""
    placement = state.placements.get(name)
    if placement is None or name not in state.desired.instances:
        return True
    obs = state.observed.get(placement.primary)
    return obs is not None and obs.health == NodeHealth.ONLINE and vm_alive(vm_on(obs, name))


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
