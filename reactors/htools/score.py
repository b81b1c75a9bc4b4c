"""Ganeti 3.0.2's hbal cluster score (`compCV`), component by component, and the
N+1 check behind its `n1_cnt` component. Lower is better; a perfectly balanced,
N+1-safe cluster with nothing on offline nodes scores close to 0.

Pure: no I/O, no logging, no asyncio; it scores a cluster, it never moves anything.
Checked number for number against the real `hinfo`/`hbal` by
tests/parity/test_cluster_score.py.

The facts, as Ganeti 3.0.2 computes them (Cluster/Metrics.hs, Node.hs, Loader.hs,
Utils/Statistics.hs), written afresh here:
  - Nodes split into online and offline (htools' offline: offline or drained).
    Every `*_cv` component is the population standard deviation of a per-node
    value over online nodes; every count/sum component sums a per-node value over
    online nodes, except the two `offline_*` counts, which sum over offline nodes.
  - p_mem = f_mem / t_mem (f_mem as given: memory of running primaries already
    taken off); p_dsk = f_dsk / t_dsk (1 when t_dsk is 0); p_cpu = (os_cpus +
    vCPUs of primaries not ADMIN_offline) / t_cpu / cpu_speed; spindles =
    spindle_use of primaries and secondaries with local storage / (spindle_ratio
    of the node's group policy × node spindles).
  - N+1: for node X and each peer P, r = memory of instances with primary P and
    secondary X that are auto-balanced and not ADMIN_offline; r_mem = max r;
    X fails N+1 when f_mem < r_mem. p_rem = r_mem / t_mem. n1_cnt counts the
    primaries plus secondaries of each online node failing N+1.
  - Dynamic load without a utilisation file: every instance weighs 1 against a
    node capacity of 1, so cpu/mem/net load = number of primaries and disk load =
    primaries + secondaries.
  - pri_tags_score: per node, instances sharing an exclusion tag (cluster tag
    `htools:iextags:X` makes instance tags starting with X exclusion tags), each
    tag counted once less than it occurs.
  - location_score: per primary, the number of location tags (`htools:nlocation:X`
    makes node tags `X:*` location tags) its primary and secondary share.
    location_exclusion_score: over all online nodes, (location tag, exclusion
    tag) pairs of primaries, each counted once less than it occurs.
  - The `*_forth` components repeat free mem/disk, vcpu ratio and spindles
    "including forthcoming instances"; with none, only free memory differs: it
    also takes off the memory of primaries that are not running.
Not modelled: dynamic utilisation files, exclusive storage, forthcoming
instances, desired-location instance tags.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, fields

from reactors.htools.model import (
    DEFAULT_SPINDLE_RATIO,
    LOCAL_STORAGE_TEMPLATES,
    BCluster,
    BInstance,
    BNode,
)

# Component name -> weight, in the order Ganeti 3.0.2 prints and sums them.
WEIGHTS: dict[str, float] = {
    "free_mem_cv": 0.5,
    "free_disk_cv": 0.5,
    "n1_cnt": 1.0,
    "reserved_mem_cv": 1.0,
    "offline_all_cnt": 4.0,
    "offline_pri_cnt": 16.0,
    "vcpu_ratio_cv": 0.5,
    "cpu_load_cv": 1.0,
    "mem_load_cv": 1.0,
    "disk_load_cv": 1.0,
    "net_load_cv": 1.0,
    "pri_tags_score": 2.0,
    "spindles_cv": 0.5,
    "free_mem_cv_forth": 0.5,
    "free_disk_cv_forth": 0.5,
    "vcpu_ratio_cv_forth": 0.5,
    "spindles_cv_forth": 0.5,
    "location_score": 1.0,
    "location_exclusion_score": 1.0,
    "reserved_mem_rtotal": 0.25,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoreBreakdown:
    """Each component's unweighted value (as `hinfo -v -v -v` prints them) and the
    weighted sum `total`."""

    free_mem_cv: float
    free_disk_cv: float
    n1_cnt: float
    reserved_mem_cv: float
    offline_all_cnt: float
    offline_pri_cnt: float
    vcpu_ratio_cv: float
    cpu_load_cv: float
    mem_load_cv: float
    disk_load_cv: float
    net_load_cv: float
    pri_tags_score: float
    spindles_cv: float
    free_mem_cv_forth: float
    free_disk_cv_forth: float
    vcpu_ratio_cv_forth: float
    spindles_cv_forth: float
    location_score: float
    location_exclusion_score: float
    reserved_mem_rtotal: float
    total: float

    def components(self) -> tuple[tuple[str, float, float], ...]:
        """(name, value, weight) for every component, in Ganeti's order."""
        return tuple(
            (f.name, float(getattr(self, f.name)), WEIGHTS[f.name])
            for f in fields(self)
            if f.name != "total"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _NodeFacts:
    """What htools derive for one node once its instances are attached."""

    p_mem: float
    p_mem_forth: float
    p_dsk: float
    p_rem: float
    p_cpu: float
    n1_fail: bool
    n_pri: int
    n_sec: int
    spindles: float
    conflicting_primaries: int
    location_score: int
    location_exclusion: Counter[tuple[str, str]]


def _ratio(num: float, den: float) -> float:
    """num / den with IEEE semantics (htools are Haskell Doubles: x/0 is not an error)."""
    if den == 0:
        return math.nan if num == 0 else math.copysign(math.inf, num)
    return num / den


def _std_dev(values: list[float]) -> float:
    """Population standard deviation, as Ganeti's StdDevStat computes it."""
    if not values:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) * (v - mean) for v in values) / len(values))


def _excl_tags(inst: BInstance, prefixes: tuple[str, ...]) -> list[str]:
    return [t for t in inst.tags if any(t.startswith(p) for p in prefixes)]


def _location_tags(node: BNode, prefixes: tuple[str, ...]) -> frozenset[str]:
    return frozenset(t for t in node.tags for p in prefixes if t.startswith(p + ":"))


def _spindle_ratio(cluster: BCluster) -> dict[str, float]:
    ratios = {
        g.name: g.policy.spindle_ratio if g.policy is not None else DEFAULT_SPINDLE_RATIO
        for g in cluster.groups
    }
    return {n.name: ratios.get(n.group, DEFAULT_SPINDLE_RATIO) for n in cluster.nodes}


def _node_facts(cluster: BCluster) -> dict[str, _NodeFacts]:
    excl_prefixes = cluster.exclusion_prefixes()
    loc_prefixes = cluster.location_prefixes()
    by_name = {n.name: n for n in cluster.nodes}
    locations = {n.name: _location_tags(n, loc_prefixes) for n in cluster.nodes}
    spindle_ratio = _spindle_ratio(cluster)
    primaries: dict[str, list[BInstance]] = {n.name: [] for n in cluster.nodes}
    secondaries: dict[str, list[BInstance]] = {n.name: [] for n in cluster.nodes}
    for inst in cluster.instances:
        if inst.pnode not in by_name:
            raise ValueError(f"instance {inst.name} has unknown primary node {inst.pnode}")
        primaries[inst.pnode].append(inst)
        if inst.snode is not None:
            if inst.snode not in by_name:
                raise ValueError(f"instance {inst.name} has unknown secondary node {inst.snode}")
            secondaries[inst.snode].append(inst)

    facts: dict[str, _NodeFacts] = {}
    for node in cluster.nodes:
        pri, sec = primaries[node.name], secondaries[node.name]
        # N+1: memory to take over per peer primary if that peer fails.
        per_peer: Counter[str] = Counter()
        for inst in sec:
            per_peer[inst.pnode] += inst.mem if (inst.auto_balance and not inst.offline) else 0
        r_mem = max(per_peer.values(), default=0)
        stopped_mem = sum(i.mem for i in pri if not i.running)
        used_cpus = node.os_cpus + sum(i.vcpus for i in pri if not i.offline)
        inst_spindles = sum(
            i.spindle_use for i in pri + sec if i.disk_template in LOCAL_STORAGE_TEMPLATES
        )
        ptags: Counter[str] = Counter()
        loc_excl: Counter[tuple[str, str]] = Counter()
        loc_score = 0
        for inst in pri:
            excl = _excl_tags(inst, excl_prefixes)
            ptags.update(excl)
            loc_excl.update((loc, e) for loc in sorted(locations[node.name]) for e in excl)
            if inst.snode is not None:
                loc_score += len(locations[node.name] & locations[inst.snode])
        facts[node.name] = _NodeFacts(
            p_mem=_ratio(node.f_mem, node.t_mem),
            p_mem_forth=_ratio(node.f_mem - stopped_mem, node.t_mem),
            p_dsk=1.0 if node.t_dsk == 0 else node.f_dsk / node.t_dsk,
            p_rem=_ratio(r_mem, node.t_mem),
            p_cpu=_ratio(_ratio(used_cpus, node.t_cpu), node.cpu_speed),
            n1_fail=node.f_mem < r_mem,
            n_pri=len(pri),
            n_sec=len(sec),
            spindles=_ratio(inst_spindles, spindle_ratio[node.name] * node.spindles),
            conflicting_primaries=sum(ptags.values()) - len(ptags),
            location_score=loc_score,
            location_exclusion=loc_excl,
        )
    return facts


def n1_failures(cluster: BCluster) -> tuple[str, ...]:
    """Online nodes whose free memory cannot take over, for any one failing peer,
    the auto-balanced instances that peer runs with this node as secondary."""
    facts = _node_facts(cluster)
    return tuple(n.name for n in cluster.nodes if not n.htools_offline and facts[n.name].n1_fail)


def score(cluster: BCluster) -> ScoreBreakdown:
    """Ganeti 3.0.2's compCV for the whole cluster, with its components."""
    facts = _node_facts(cluster)
    online = [facts[n.name] for n in cluster.nodes if not n.htools_offline]
    offline = [facts[n.name] for n in cluster.nodes if n.htools_offline]
    loc_excl: Counter[tuple[str, str]] = Counter()
    for f in online:
        loc_excl.update(f.location_exclusion)
    values: dict[str, float] = {
        "free_mem_cv": _std_dev([f.p_mem for f in online]),
        "free_disk_cv": _std_dev([f.p_dsk for f in online]),
        "n1_cnt": float(sum(f.n_pri + f.n_sec for f in online if f.n1_fail)),
        "reserved_mem_cv": _std_dev([f.p_rem for f in online]),
        "offline_all_cnt": float(sum(f.n_pri + f.n_sec for f in offline)),
        "offline_pri_cnt": float(sum(f.n_pri for f in offline)),
        "vcpu_ratio_cv": _std_dev([f.p_cpu for f in online]),
        "cpu_load_cv": _std_dev([float(f.n_pri) for f in online]),
        "mem_load_cv": _std_dev([float(f.n_pri) for f in online]),
        "disk_load_cv": _std_dev([float(f.n_pri + f.n_sec) for f in online]),
        "net_load_cv": _std_dev([float(f.n_pri) for f in online]),
        "pri_tags_score": float(sum(f.conflicting_primaries for f in online)),
        "spindles_cv": _std_dev([f.spindles for f in online]),
        "free_mem_cv_forth": _std_dev([f.p_mem_forth for f in online]),
        "free_disk_cv_forth": _std_dev([f.p_dsk for f in online]),
        "vcpu_ratio_cv_forth": _std_dev([f.p_cpu for f in online]),
        "spindles_cv_forth": _std_dev([f.spindles for f in online]),
        "location_score": float(sum(f.location_score for f in online)),
        "location_exclusion_score": float(sum(loc_excl.values()) - len(loc_excl)),
        "reserved_mem_rtotal": sum(f.p_rem for f in online),
    }
    total = sum(values[name] * weight for name, weight in WEIGHTS.items())
    return ScoreBreakdown(total=total, **values)
