"""htools' global N+1 check (Ganeti 3.0.2's GlobalN1.redundant, what hspace and
hail require of a cluster in capacity mode): for every node, can the cluster
lose it? Its DRBD primaries fail over to their secondaries, and its instances
that cannot move (plain, diskless, file) are created again on another node of
its group.

Pure: no I/O, no logging; it judges a `BCluster`, it moves nothing.

As htools check it, with the hard limits only (soft ones are ignored there):
a node taking a primary over must keep some unallocated memory (more than 0)
after taking the running instances' memory, and free disk (more than 0); the
failed node, now their secondary, must have free disk unless it is offline;
with exclusive storage, free spindles must not go below 0. Stopped instances
need no memory. An instance created again goes where the most unallocated
memory is left (htools take the placement scoring best; this can differ when
several nodes are nearly full). Offline nodes must be evacuable too, unless
`online_only` (hspace's --accept-existing-errors).
Not modelled: migration tags (htools:migration), externally mirrored
templates (sharedfile, rbd, ext, gluster, blockdev), which corral does not run.
"""

from __future__ import annotations

from dataclasses import dataclass

from reactors.htools.loaded import load
from reactors.htools.model import BCluster, BInstance, BNode


@dataclass(frozen=True, slots=True, kw_only=True)
class LossVerdict:
    """Why losing `node` would leave the cluster short: the instance that could
    not be taken over and what was missing."""

    node: str
    instance: str
    why: str


def _fails_over(
    inst: BInstance, lost: BNode, target: BNode, free: dict[str, int], disk: dict[str, int]
) -> str | None:
    if inst.uses_memory and free[target.name] - inst.mem <= 0:
        return f"{target.name} has {free[target.name]}M unallocated for its {inst.mem}M"
    if inst.local_storage and disk[target.name] <= 0:
        return f"{target.name} has no free disk"
    if not lost.htools_offline and disk[lost.name] <= 0:
        return f"{lost.name} has no free disk to stay its secondary"
    if target.exclusive_storage and (inst.disk_spindles is None or target.free_spindles < 0):
        return f"{target.name} has no free spindles"
    return None


def _recreate(
    inst: BInstance, lost: BNode, group: list[BNode], free: dict[str, int], disk: dict[str, int]
) -> str | None:
    room = [
        n
        for n in group
        if n.name != lost.name
        and (not inst.uses_memory or free[n.name] - inst.mem > 0)
        and (not inst.local_storage or disk[n.name] - inst.dsk > 0)
    ]
    if not room:
        return f"no node of group {lost.group} has room for it again"
    best = max(room, key=lambda n: (free[n.name], n.name))
    if inst.uses_memory:
        free[best.name] -= inst.mem
    if inst.local_storage:
        disk[best.name] -= inst.dsk
    return None


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What every node's verdict starts from: the nodes by name, their
    unallocated memory and free disk, and per node its primaries (not
    forthcoming) in htools' order, the reverse of the load order."""

    by_name: dict[str, BNode]
    free: dict[str, int]
    disk: dict[str, int]
    primaries: dict[str, list[BInstance]]


def _loaded(cluster: BCluster) -> _Loaded:
    recs = load(cluster)
    primaries: dict[str, list[BInstance]] = {n.name: [] for n in cluster.nodes}
    for inst in reversed(cluster.instances):
        if not inst.forthcoming:
            primaries[inst.pnode].append(inst)
    return _Loaded(
        by_name={n.name: n for n in cluster.nodes},
        free={name: r.unallocated for name, r in recs.items()},
        disk={n.name: n.f_dsk for n in cluster.nodes},
        primaries=primaries,
    )


def loss_verdict(
    cluster: BCluster, node: BNode, *, loaded: _Loaded | None = None
) -> LossVerdict | None:
    """None when the cluster can lose `node` (htools' canEvacuateNode);
    `loaded`: the cluster's `_loaded`, when the caller has it."""
    base = _loaded(cluster) if loaded is None else loaded
    by_name = base.by_name
    free = dict(base.free)
    disk = dict(base.disk)
    group = [n for n in cluster.nodes if n.group == node.group]
    # htools' primary list is in reverse load order; the outcome of the
    # failovers does not depend on it, the recreations' placement might
    primaries = base.primaries[node.name]
    for inst in (i for i in primaries if i.disk_template == "drbd" and i.snode is not None):
        assert inst.snode is not None
        why = _fails_over(inst, node, by_name[inst.snode], free, disk)
        if why is not None:
            return LossVerdict(node=node.name, instance=inst.name, why=why)
        if inst.uses_memory:
            free[inst.snode] -= inst.mem
            free[node.name] += inst.mem
    rest = [i for i in primaries if i.disk_template != "drbd" or i.snode is None]
    for inst in sorted(rest, key=lambda i: -i.mem):
        why = _recreate(inst, node, group, free, disk)
        if why is not None:
            return LossVerdict(node=node.name, instance=inst.name, why=why)
    return None


def unredundant(cluster: BCluster, *, online_only: bool = False) -> tuple[LossVerdict, ...]:
    """Every node the cluster could not lose (empty: htools' global N+1 holds)."""
    out: list[LossVerdict] = []
    loaded = _loaded(cluster)
    for node in cluster.nodes:
        if online_only and node.htools_offline:
            continue
        verdict = loss_verdict(cluster, node, loaded=loaded)
        if verdict is not None:
            out.append(verdict)
    return tuple(out)
