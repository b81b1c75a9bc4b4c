"""Balancing a cluster of several node groups one group at a time, as hbal does
(`hbal -G GROUP`): an instance never leaves its group. `group_views` cuts the
cluster into one view per group, `merge_plans` puts the groups' plans back
together into one plan of the whole cluster.

Pure: no I/O, no logging; it rearranges clusters and plans, it plans nothing.

A group's view holds its nodes and every instance with a node in it. An
instance whose two nodes lie in different groups stays where it is (hbal's
"split" instances), and the other group's node it uses is kept in the view as an
offline node, so that its share of the group's figures is there; being pinned,
it changes the view's score by a constant, which no move can change.
"""

from __future__ import annotations

from dataclasses import replace

from reactors.balance.moves import BalancePlan, Move
from reactors.balance.work import Work
from reactors.htools.model import BCluster, BNode
from reactors.htools.score import n1_failures, score

SPLIT = "its primary and secondary are in different node groups"


def groups_with_nodes(cluster: BCluster) -> list[str]:
    """The groups that have nodes, in the order their first node comes."""
    seen: list[str] = []
    for n in cluster.nodes:
        if n.group not in seen:
            seen.append(n.group)
    return seen


def group_views(cluster: BCluster) -> list[tuple[str, BCluster]]:
    """One view per group that has nodes (see the module's docstring)."""
    group_of = {n.name: n.group for n in cluster.nodes}
    views: list[tuple[str, BCluster]] = []
    for g in groups_with_nodes(cluster):
        instances = tuple(
            i
            for i in cluster.instances
            if group_of[i.pnode] == g or (i.snode is not None and group_of[i.snode] == g)
        )
        foreign = {
            name
            for i in instances
            for name in (i.pnode, i.snode)
            if name is not None and group_of[name] != g
        }
        nodes: list[BNode] = [
            n if n.group == g else replace(n, offline=True)
            for n in cluster.nodes
            if n.group == g or n.name in foreign
        ]
        pinned = dict(cluster.pinned)
        for i in instances:
            if i.snode is not None and group_of[i.pnode] != group_of[i.snode]:
                pinned[i.name] = SPLIT
        views.append((g, replace(cluster, nodes=tuple(nodes), instances=instances, pinned=pinned)))
    return views


def merge_plans(
    cluster: BCluster, plans: list[tuple[str, BalancePlan]], *, avoid: frozenset[str]
) -> BalancePlan:
    """The groups' plans as one plan of `cluster`: their moves one group after
    another, each with the whole cluster's score after it, and the cluster after
    all of them, scored whole (as `hinfo` scores it)."""
    nodes = {n.name: n for n in cluster.nodes}
    where = {i.name: i for i in cluster.instances}
    for g, plan in plans:
        for n in plan.cluster_after.nodes:
            if n.group == g and nodes[n.name].group == g:
                nodes[n.name] = replace(n, offline=nodes[n.name].offline)
        for i in plan.cluster_after.instances:
            where[i.name] = i
    after = replace(
        cluster,
        nodes=tuple(nodes[n.name] for n in cluster.nodes),
        instances=tuple(where[i.name] for i in cluster.instances),
    )
    work = Work(cluster, avoid)
    index = {name: k for k, name in enumerate(work.names)}
    inst_at = {inst.name: k for k, inst in enumerate(cluster.instances)}
    moves: list[Move] = []
    for m in (m for _, p in plans for m in p.moves):
        work.apply(inst_at[m.instance], index[m.new_primary], index[m.new_secondary])
        moves.append(replace(m, score_after=work.total()))
    final = score(after).total
    if moves:
        moves[-1] = replace(moves[-1], score_after=final)
    first = plans[0][1]
    return replace(
        first,
        moves=tuple(moves),
        score_before=score(cluster).total,
        score_after=final,
        data_mib=sum(p.data_mib for _, p in plans),
        migrations=sum(p.migrations for _, p in plans),
        n1_failures_before=n1_failures(cluster),
        n1_failures_after=n1_failures(after),
        cluster_after=after,
        candidates_scored=sum(p.candidates_scored for _, p in plans),
        stopped_by="; ".join(f"group {g}: {p.stopped_by}" for g, p in plans),
        search="; ".join(f"group {g}: {p.search}" for g, p in plans),
        dropped=tuple(d for _, p in plans for d in p.dropped),
    )
