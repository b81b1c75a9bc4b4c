"""The node records htools build when they load a cluster (Ganeti 3.0.2's
Loader.mergeData, Node.setPri/setSec/buildPeers and Loader.updateMissing),
field for field: what every score component and every N+1 verdict is computed
from.

Pure: no I/O, no logging; it derives figures from a `BCluster`, it moves nothing.

The memory facts, as htools hold them:
  - f_mem is what the node reported free (state of world); the state of record
    is t_mem (truncated) - n_mem - i_mem, i_mem being the memory of the
    primaries that use memory (running, ERROR_up, ERROR_node*, ERROR_wrongnode;
    not forthcoming). x_mem, the unaccounted memory, is record minus world.
  - The free memory scored (p_mem) is the unallocated memory: record minus
    x_mem where x_mem is positive, so min(record, world) at load.
  - N+1 (fail_n1) compares the reported f_mem with r_mem, the largest sum over
    one peer of the memory of instances with that peer as primary and this node
    as secondary, auto-balanced and not ADMIN_offline (stopped ones included),
    forthcoming ones left out.
  - The "forth" free memory starts from the reported f_mem and takes off every
    primary that does not use memory (stopped, offline, forthcoming).
Disk: p_dsk is f_dsk / t_dsk as reported (1 when t_dsk is 0), or free over total
spindles on a node with exclusive storage; forthcoming instances with local
storage take their disk (and spindles) off only the "forth" figure. Spindle
use counts the primaries and secondaries with local storage, except on a node
with exclusive storage, where it is 0.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from reactors.htools.model import (
    DEFAULT_SPINDLE_RATIO,
    EXCLUSION_TAG_PREFIX,
    BCluster,
    BInstance,
    BNode,
    Util,
)

DESIRED_LOCATION_PREFIX = "htools:desiredlocation:"


def ratio(num: float, den: float) -> float:
    """num / den as a Haskell Double divides: x / 0 is infinite, 0 / 0 NaN."""
    if den == 0:
        return math.nan if num == 0 or math.isnan(num) else math.copysign(math.inf, num)
    return num / den


def free_ratio(free: float, total: float) -> float:
    """htools' computePDsk: free / total, 1 where there is no total."""
    return 1.0 if total == 0 else free / total


@dataclass(slots=True, kw_only=True)
class LoadedNode:
    """One node's figures once its instances are attached (htools' Node)."""

    node: BNode
    i_mem: int = 0
    x_mem: int = 0
    unallocated: int = 0
    f_mem_forth: int = 0
    f_dsk_forth: int = 0
    f_spindles_forth: int = 0
    p_dsk_forth: float = 0.0
    r_mem: int = 0
    u_cpu: int = 0
    u_cpu_forth: int = 0
    inst_spindles: float = 0.0
    inst_spindles_forth: float = 0.0
    hi_spindles: float = 0.0
    primaries: list[BInstance] = field(default_factory=list)
    secondaries: list[BInstance] = field(default_factory=list)
    util_load: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    ptags: Counter[str] = field(default_factory=Counter)
    location_score: int = 0
    loc_excl: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def offline(self) -> bool:
        return self.node.htools_offline

    @property
    def fail_n1(self) -> bool:
        return self.node.f_mem < self.r_mem

    @property
    def p_mem(self) -> float:
        return ratio(self.unallocated, self.node.t_mem)

    @property
    def p_mem_forth(self) -> float:
        return ratio(self.f_mem_forth, self.node.t_mem)

    @property
    def p_dsk(self) -> float:
        n = self.node
        if n.exclusive_storage:
            return free_ratio(n.free_spindles, n.spindles)
        return free_ratio(n.f_dsk, n.t_dsk)

    @property
    def p_rem(self) -> float:
        return ratio(self.r_mem, self.node.t_mem)

    @property
    def p_cpu(self) -> float:
        return ratio(ratio(self.u_cpu, self.node.t_cpu), self.node.cpu_speed)

    @property
    def p_cpu_forth(self) -> float:
        return ratio(ratio(self.u_cpu_forth, self.node.t_cpu), self.node.cpu_speed)

    @property
    def spindles(self) -> float:
        return ratio(self.inst_spindles, self.hi_spindles)

    @property
    def spindles_forth(self) -> float:
        return ratio(self.inst_spindles_forth, self.hi_spindles)

    @property
    def conflicting_primaries(self) -> int:
        return sum(self.ptags.values()) - len(self.ptags)


def exclusion_tags(inst: BInstance, prefixes: tuple[str, ...]) -> list[str]:
    """The instance's tags that start with an exclusion prefix (htools match the
    prefix as given, without a colon)."""
    return [t for t in inst.tags if any(t.startswith(p) for p in prefixes)]


def location_tags(node: BNode, prefixes: tuple[str, ...]) -> frozenset[str]:
    """The node's tags naming a failure domain (`htools:nlocation:X` makes tags
    starting with `X:` location tags)."""
    return frozenset(t for t in node.tags for p in prefixes if t.startswith(p + ":"))


def desired_location_prefixes(cluster: BCluster) -> tuple[str, ...]:
    """Instance tag prefixes naming desired locations (non-empty
    `htools:desiredlocation:X` cluster tags)."""
    n = len(DESIRED_LOCATION_PREFIX)
    return tuple(
        t[n:] for t in cluster.cluster_tags if t.startswith(DESIRED_LOCATION_PREFIX) and t[n:]
    )


def spindle_ratios(cluster: BCluster) -> dict[str, float]:
    """Each node's spindle ratio, from its group's policy (htools give a group
    without a policy line the default policy, not the cluster's)."""
    ratios = {
        g.name: g.policy.spindle_ratio if g.policy is not None else DEFAULT_SPINDLE_RATIO
        for g in cluster.groups
    }
    return {n.name: ratios.get(n.group, DEFAULT_SPINDLE_RATIO) for n in cluster.nodes}


def _add_util(load: list[float], util: Util, *, all_four: bool) -> None:
    if all_four:
        load[0] += util.cpu
        load[1] += util.mem
        load[3] += util.net
    load[2] += util.dsk


def _take_forth_disk(rec: LoadedNode, inst: BInstance) -> None:
    """A forthcoming instance's disk and spindles off the "forth" figures
    (updateForthcomingOnlyFields; an instance of unknown spindles on a node with
    exclusive storage sets its free spindles to -1, as htools do)."""
    n = rec.node
    if inst.local_storage:
        rec.f_dsk_forth -= inst.dsk
    if n.exclusive_storage:
        if inst.disk_spindles is None:
            rec.f_spindles_forth = -1
        else:
            rec.f_spindles_forth -= inst.disk_spindles
        rec.p_dsk_forth = free_ratio(rec.f_spindles_forth, n.spindles)
    else:
        rec.f_spindles_forth = 0
        rec.p_dsk_forth = free_ratio(rec.f_dsk_forth, n.t_dsk)


def _spindle_use(rec: LoadedNode, inst: BInstance) -> float:
    return 0.0 if rec.node.exclusive_storage or not inst.local_storage else inst.spindle_use


def _set_pri(
    rec: LoadedNode,
    inst: BInstance,
    *,
    excl: list[str],
    dsrd: frozenset[str],
    loc_score: int,
    locs: frozenset[str],
) -> None:
    """Node.setPri at load time."""
    vcpus = 0 if inst.offline else inst.vcpus
    if not inst.forthcoming:
        rec.primaries.append(inst)
        rec.u_cpu += vcpus
        _add_util(rec.util_load, inst.util, all_four=True)
        rec.inst_spindles = rec.inst_spindles + _spindle_use(rec, inst)
        rec.location_score += loc_score + len(dsrd) - len(dsrd & locs)
        rec.loc_excl.update((loc, e) for loc in locs for e in excl)
    rec.ptags.update(excl)
    rec.u_cpu_forth += vcpus
    if not inst.uses_memory:
        rec.f_mem_forth -= inst.mem
    rec.inst_spindles_forth = rec.inst_spindles_forth + _spindle_use(rec, inst)
    if inst.forthcoming:
        _take_forth_disk(rec, inst)


def _set_sec(rec: LoadedNode, inst: BInstance) -> None:
    """Node.setSec at load time."""
    if not inst.forthcoming:
        rec.secondaries.append(inst)
        _add_util(rec.util_load, inst.util, all_four=False)
        rec.inst_spindles = rec.inst_spindles + _spindle_use(rec, inst)
    rec.inst_spindles_forth = rec.inst_spindles_forth + _spindle_use(rec, inst)
    if inst.forthcoming:
        _take_forth_disk(rec, inst)


def _fresh(node: BNode, hi_spindles: float) -> LoadedNode:
    """Node.create: the figures before any instance is attached."""
    rec = LoadedNode(node=node)
    rec.f_mem_forth = node.f_mem
    rec.f_dsk_forth = node.f_dsk
    rec.f_spindles_forth = node.free_spindles
    rec.p_dsk_forth = (
        free_ratio(node.free_spindles, node.spindles)
        if node.exclusive_storage
        else free_ratio(node.f_dsk, node.t_dsk)
    )
    rec.u_cpu = rec.u_cpu_forth = node.os_cpus
    rec.hi_spindles = hi_spindles
    return rec


def load(cluster: BCluster) -> dict[str, LoadedNode]:
    """Every node's record, by name, as htools hold it after loading `cluster`."""
    excl_prefixes = tuple(
        t[len(EXCLUSION_TAG_PREFIX) :]
        for t in cluster.cluster_tags
        if t.startswith(EXCLUSION_TAG_PREFIX) and len(t) > len(EXCLUSION_TAG_PREFIX)
    )
    loc_prefixes = cluster.location_prefixes()
    dsrd_prefixes = desired_location_prefixes(cluster)
    sratio = spindle_ratios(cluster)
    recs = {n.name: _fresh(n, sratio[n.name] * n.spindles) for n in cluster.nodes}
    locs = {n.name: location_tags(n, loc_prefixes) for n in cluster.nodes}
    peers: dict[str, Counter[str]] = {n.name: Counter() for n in cluster.nodes}
    for inst in cluster.instances:
        if inst.pnode not in recs:
            raise ValueError(f"instance {inst.name} has unknown primary node {inst.pnode}")
        if inst.snode is not None and inst.snode not in recs:
            raise ValueError(f"instance {inst.name} has unknown secondary node {inst.snode}")
        excl = exclusion_tags(inst, excl_prefixes)
        dsrd = frozenset(t for t in inst.tags if any(t.startswith(p) for p in dsrd_prefixes))
        p_locs = locs[inst.pnode]
        shared = len(p_locs & locs[inst.snode]) if inst.snode is not None else 0
        _set_pri(recs[inst.pnode], inst, excl=excl, dsrd=dsrd, loc_score=shared, locs=p_locs)
        if inst.snode is not None:
            _set_sec(recs[inst.snode], inst)
            if inst.reserves:
                peers[inst.snode][inst.pnode] += inst.mem
    for name, rec in recs.items():
        n = rec.node
        rec.r_mem = max(peers[name].values(), default=0)
        rec.i_mem = sum(i.mem for i in rec.primaries if i.uses_memory)
        recorded = math.trunc(n.t_mem) - n.n_mem - rec.i_mem
        rec.x_mem = recorded - n.f_mem
        rec.unallocated = recorded - max(0, rec.x_mem)
    return recs
