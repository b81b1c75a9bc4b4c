"""Ganeti 3.0.2's hbal cluster score (`compCV`), component by component, and the
N+1 check behind its `n1_cnt` component. Lower is better; a perfectly balanced,
N+1-safe cluster with nothing on offline nodes scores close to 0.

Pure: no I/O, no logging, no asyncio; it scores a cluster, it never moves anything.
Checked number for number against the real `hinfo`/`hbal` by
tests/parity/test_cluster_score.py.

The per-node figures come from `reactors.htools.loaded` (htools' loader, field
for field); here they are aggregated as Cluster/Metrics.hs does:
  - Nodes split into online and offline (htools' offline: offline or drained).
    Every `*_cv` component is the population standard deviation (two-pass) of a
    per-node value over online nodes; every count/sum component sums a per-node
    value over online nodes, except the two `offline_*` counts, which sum over
    offline nodes. Forthcoming instances are not counted as instances.
  - Dynamic loads: the sums of the instances' utilisation weights (1 each
    without a `-U` file) over primaries (cpu, mem, net) and over primaries and
    secondaries (disk), against a node capacity of 1.
  - location_exclusion_score merges the (location, exclusion tag) pair counts
    of all online nodes and counts each pair once less than it occurs.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, fields

from reactors.htools.loaded import LoadedNode, load
from reactors.htools.model import BCluster

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


def std_dev(values: list[float]) -> float:
    """Population standard deviation, as Ganeti's StdDevStat computes it."""
    if not values:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) * (v - mean) for v in values) / len(values))


def n1_failures(cluster: BCluster) -> tuple[str, ...]:
    """Online nodes whose reported free memory cannot take over, for some one
    failing peer, the auto-balanced instances that peer runs with this node as
    secondary (htools' "bad nodes")."""
    recs = load(cluster)
    return tuple(n.name for n in cluster.nodes if not n.htools_offline and recs[n.name].fail_n1)


def score(cluster: BCluster, *, group: str | None = None) -> ScoreBreakdown:
    """Ganeti 3.0.2's compCV for the whole cluster (what `hinfo` prints), or for
    the nodes of one group (what `hbal -G GROUP` scores), with its components."""
    recs = load(cluster)
    nodes = [recs[n.name] for n in cluster.nodes if group is None or n.group == group]
    return score_of(nodes)


def score_of(nodes: list[LoadedNode]) -> ScoreBreakdown:
    """compCV over these loaded nodes."""
    online = [r for r in nodes if not r.offline]
    offline = [r for r in nodes if r.offline]
    loc_excl: Counter[tuple[str, str]] = Counter()
    for r in online:
        loc_excl.update(r.loc_excl)

    def n_all(r: LoadedNode) -> int:
        return len(r.primaries) + len(r.secondaries)

    values: dict[str, float] = {
        "free_mem_cv": std_dev([r.p_mem for r in online]),
        "free_disk_cv": std_dev([r.p_dsk for r in online]),
        "n1_cnt": float(sum(n_all(r) for r in online if r.fail_n1)),
        "reserved_mem_cv": std_dev([r.p_rem for r in online]),
        "offline_all_cnt": float(sum(n_all(r) for r in offline)),
        "offline_pri_cnt": float(sum(len(r.primaries) for r in offline)),
        "vcpu_ratio_cv": std_dev([r.p_cpu for r in online]),
        "cpu_load_cv": std_dev([r.util_load[0] for r in online]),
        "mem_load_cv": std_dev([r.util_load[1] for r in online]),
        "disk_load_cv": std_dev([r.util_load[2] for r in online]),
        "net_load_cv": std_dev([r.util_load[3] for r in online]),
        "pri_tags_score": float(sum(r.conflicting_primaries for r in online)),
        "spindles_cv": std_dev([r.spindles for r in online]),
        "free_mem_cv_forth": std_dev([r.p_mem_forth for r in online]),
        "free_disk_cv_forth": std_dev([r.p_dsk_forth for r in online]),
        "vcpu_ratio_cv_forth": std_dev([r.p_cpu_forth for r in online]),
        "spindles_cv_forth": std_dev([r.spindles_forth for r in online]),
        "location_score": float(sum(r.location_score for r in online)),
        "location_exclusion_score": float(sum(loc_excl.values()) - len(loc_excl)),
        "reserved_mem_rtotal": sum(r.p_rem for r in online),
    }
    total = sum(values[name] * weight for name, weight in WEIGHTS.items())
    return ScoreBreakdown(total=total, **values)
