"""Ganeti's cluster score after one small change, without re-scoring the cluster.

`prepare(cluster)` derives, once, what `reactors.htools.score` derives per node
(free memory and disk ratios, reserved memory, vCPU ratio, spindles, primary and
secondary counts, N+1 reservations per peer, exclusion tags of primaries, location
tags) and keeps, for every per-node value whose standard deviation is a score
component, the running sums of its deviations from the current mean. Then
`Baseline.after_add` (a new instance on a primary/secondary pair) and
`Baseline.after_move_secondary` (one instance's secondary replaced) recompute only
the two or three nodes that change and update the sums, in O(1) per candidate
(O(peers) for the N+1 reservation of a secondary that loses an instance). The
per-node values are computed with the very same arithmetic as `reactors.htools.score`, and a
standard deviation that shrinks sharply is recomputed in two passes, so the result
equals `reactors.htools.score.score(...)` of the changed cluster to within 1e-9.

Pure: no I/O, no logging, no asyncio; it evaluates candidates, it never decides or
changes placement. `with_instance` and `with_secondary` build the changed cluster
itself, for whoever wants to check a figure against the full score.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from reactors.htools.loaded import (
    exclusion_tags,
    free_ratio,
    load,
    location_tags,
    ratio,
    spindle_ratios,
)
from reactors.htools.model import LOCAL_STORAGE_TEMPLATES, BCluster, BInstance, BNode
from reactors.htools.score import WEIGHTS, score, std_dev

_K = TypeVar("_K")

# A standard deviation whose variance falls below this fraction of the variance it
# started from is recomputed in two passes (the running sums lose digits there).
_SHRINK = 1e-4

# The eight per-node values whose population standard deviation is scored, and the
# score components each one feeds.
_STD_METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("p_mem", ("free_mem_cv",)),
    ("p_mem_forth", ("free_mem_cv_forth",)),
    ("p_dsk", ("free_disk_cv", "free_disk_cv_forth")),
    ("p_rem", ("reserved_mem_cv",)),
    ("p_cpu", ("vcpu_ratio_cv", "vcpu_ratio_cv_forth")),
    ("n_pri", ("cpu_load_cv", "mem_load_cv", "net_load_cv")),
    ("n_all", ("disk_load_cv",)),
    ("spindles", ("spindles_cv", "spindles_cv_forth")),
)
_P_REM = 3  # index of p_rem in _STD_METRICS
_W = WEIGHTS
METRIC_WEIGHT = tuple(sum(WEIGHTS[name] for name in names) for _, names in _STD_METRICS)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Node:
    """One node as the score sees it, with what a change needs to recompute it."""

    name: str
    online: bool
    t_mem: float
    f_mem: int
    over: int  # reported free memory above the state of record (never scored)
    stopped_mem: int
    t_dsk: float
    f_dsk: int
    t_cpu: float
    cpu_speed: float
    used_cpus: int
    spindle_den: float
    inst_spindles: int
    n_pri: int
    n_sec: int
    per_peer: dict[str, int]
    r_mem: int
    ptags: Counter[str]
    locations: frozenset[str]
    values: tuple[float, ...]  # in _STD_METRICS order

    @property
    def n1_fail(self) -> bool:
        return self.f_mem < self.r_mem


@dataclass(frozen=True, slots=True, kw_only=True)
class _Stat:
    """Population statistics of one per-node value over online nodes: the values,
    the reference `center` (their mean) and the sums of deviations from it."""

    values: tuple[float, ...]
    center: float
    s1: float
    s2: float

    @property
    def count(self) -> int:
        return len(self.values)

    def std_after(self, changes: Sequence[tuple[int, float]]) -> float:
        """The standard deviation, in two passes, once value `i` becomes `v` for
        each (i, v)."""
        values = list(self.values)
        for i, new in changes:
            values[i] = new
        return std_dev(values)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewInstance:
    """What the score needs to know of an instance being placed: sizes in MiB,
    vCPUs, whether it runs (uses memory), is ADMIN_offline, is auto-balanced, its
    tags, spindle use and disk template."""

    mem: int
    dsk: int
    vcpus: int
    running: bool = True
    offline: bool = False
    auto_balance: bool = True
    tags: tuple[str, ...] = ()
    spindle_use: int = 1
    disk_template: str = "drbd"

    @staticmethod
    def of(inst: BInstance) -> NewInstance:
        return NewInstance(
            mem=inst.mem,
            dsk=inst.dsk,
            vcpus=inst.vcpus,
            running=inst.running,
            offline=inst.offline,
            auto_balance=inst.auto_balance,
            tags=inst.tags,
            spindle_use=inst.spindle_use,
            disk_template=inst.disk_template,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Baseline:
    """A prepared cluster: its score components and what changing them needs.
    Treat as read-only; build with `prepare`."""

    cluster: BCluster
    nodes: dict[str, _Node]
    online_index: dict[str, int]
    stats: tuple[_Stat, ...]
    base_std: tuple[float, ...]  # each scored standard deviation as it is now
    components: dict[str, float]
    total: float
    excl_prefixes: tuple[str, ...]
    loc_excl: Counter[tuple[str, str]]
    instances: dict[str, BInstance]

    # ----------------------------------------------------------------- add

    def after_add(self, *, inst: NewInstance, primary: str, secondary: str | None) -> float:
        """The cluster score once `inst` runs on `primary` with its second copy on
        `secondary` (None for a template without one)."""
        return self._scores(inst, [(primary, secondary)])[0]

    def pair_scores(
        self, *, inst: NewInstance, pairs: Iterable[tuple[str, str]]
    ) -> list[tuple[float, str, str]]:
        """(score after adding `inst`, primary, secondary) for each pair, in order.
        What a primary gains is computed once for all its secondaries, and what a
        secondary gains once per N+1 need (the only part that depends on the
        primary)."""
        listed = list(pairs)
        scores = self._scores(inst, listed)
        return [(sc, p, s) for sc, (p, s) in zip(scores, listed, strict=True)]

    def _scores(self, inst: NewInstance, pairs: Sequence[tuple[str, str | None]]) -> list[float]:
        gained: dict[str, _Side] = {}
        held: dict[tuple[str, int], _Side] = {}
        excl = _excl_tags_of(inst.tags, self.excl_prefixes)
        out: list[float] = []
        for primary, secondary in pairs:
            if primary == secondary:
                raise ValueError("primary and secondary must differ")
            p = self.nodes[primary]
            side_p = gained.get(primary)
            if side_p is None:
                side_p = gained[primary] = self._side(p, _add_primary(p, inst))
                if p.online and excl:
                    extra = _W["pri_tags_score"] * _repeats(p.ptags, excl)
                    extra += _W["location_exclusion_score"] * _repeats(
                        self.loc_excl, [(loc, e) for loc in sorted(p.locations) for e in excl]
                    )
                    side_p = gained[primary] = replace(side_p, scalar=side_p.scalar + extra)
                elif not p.online:
                    side_p = gained[primary] = replace(
                        side_p, scalar=side_p.scalar + _W["offline_pri_cnt"]
                    )
            sides = [side_p]
            delta = 0.0
            if secondary is not None:
                s = self.nodes[secondary]
                need = s.per_peer.get(primary, 0) + _reserved(inst)
                key = (secondary, max(s.r_mem, need))
                side_s = held.get(key)
                if side_s is None:
                    side_s = held[key] = self._side(s, _add_secondary(s, inst, primary))
                sides.append(side_s)
                if p.online and p.locations:
                    delta += _W["location_score"] * len(p.locations & s.locations)
            out.append(self.total + delta + self._combine(sides))
        return out

    # ---------------------------------------------------------- move secondary

    def after_move_secondary(self, *, instance: str, secondary: str) -> float:
        """The cluster score once `instance` (already in the cluster) keeps its
        primary and has its second copy on `secondary` instead."""
        inst = self.instances[instance]
        if inst.snode is None:
            raise ValueError(f"{instance} has no secondary to move")
        if secondary in (inst.pnode, inst.snode):
            raise ValueError(f"{secondary} already holds {instance}")
        new = NewInstance.of(inst)
        old_s = self.nodes[inst.snode]
        new_s = self.nodes[secondary]
        delta = self._combine(
            [
                self._side(old_s, _remove_secondary(old_s, new, inst.pnode)),
                self._side(new_s, _add_secondary(new_s, new, inst.pnode)),
            ]
        )
        p = self.nodes[inst.pnode]
        if p.online:
            delta += _W["location_score"] * (
                len(p.locations & new_s.locations) - len(p.locations & old_s.locations)
            )
        return self.total + delta

    # ---------------------------------------------------------------- shared

    def _side(self, old: _Node, new: _Node) -> _Side:
        """What one node's change does to the total: the sums and counts it moves
        at once (`scalar`), and for each scored standard deviation its changed
        value with the change of the running sums of deviations."""
        if not old.online:
            return _Side(
                scalar=_W["offline_all_cnt"] * (new.n_pri + new.n_sec - old.n_pri - old.n_sec),
                metrics=(),
            )
        i = self.online_index[old.name]
        metrics = []
        for m, (ov, nv) in enumerate(zip(old.values, new.values, strict=True)):
            if nv != ov:
                c = self.stats[m].center
                do, dn = ov - c, nv - c
                metrics.append((m, i, nv, dn - do, dn * dn - do * do))
        scalar = _W["n1_cnt"] * (
            (new.n_pri + new.n_sec) * new.n1_fail - (old.n_pri + old.n_sec) * old.n1_fail
        )
        scalar += _W["reserved_mem_rtotal"] * (new.values[_P_REM] - old.values[_P_REM])
        return _Side(scalar=scalar, metrics=tuple(metrics))

    def _combine(self, sides: list[_Side]) -> float:
        """How much the total moves when all `sides` happen (on distinct nodes)."""
        delta = 0.0
        d1: dict[int, float] = {}
        d2: dict[int, float] = {}
        changes: dict[int, list[tuple[int, float]]] = {}
        for side in sides:
            delta += side.scalar
            for m, i, nv, ds1, ds2 in side.metrics:
                d1[m] = d1.get(m, 0.0) + ds1
                d2[m] = d2.get(m, 0.0) + ds2
                changes.setdefault(m, []).append((i, nv))
        for m, ds1 in d1.items():
            stat = self.stats[m]
            n = stat.count
            mean_dev = (stat.s1 + ds1) / n
            var = (stat.s2 + d2[m]) / n - mean_dev * mean_dev
            if math.isfinite(var) and var >= 0.0 and var >= _SHRINK * (stat.s2 / n):
                std = math.sqrt(var)
            else:
                std = stat.std_after(changes[m])
            delta += METRIC_WEIGHT[m] * (std - self.base_std[m])
        return delta


@dataclass(frozen=True, slots=True, kw_only=True)
class _Side:
    scalar: float
    metrics: tuple[tuple[int, int, float, float, float], ...]


# --------------------------------------------------------------------- building


def prepare(cluster: BCluster) -> Baseline:
    """Everything `after_add` / `after_move_secondary` need, from one pass over the
    cluster (the same facts `reactors.htools.score.score` derives)."""
    facts = load(cluster)
    excl_prefixes = cluster.exclusion_prefixes()
    loc_prefixes = cluster.location_prefixes()
    spindle_ratio = spindle_ratios(cluster)
    per_peer: dict[str, Counter[str]] = {n.name: Counter() for n in cluster.nodes}
    stopped: Counter[str] = Counter()
    vcpus: Counter[str] = Counter()
    spindles: Counter[str] = Counter()
    ptags: dict[str, Counter[str]] = {n.name: Counter() for n in cluster.nodes}
    for inst in cluster.instances:
        if not inst.running:
            stopped[inst.pnode] += inst.mem
        if not inst.offline:
            vcpus[inst.pnode] += inst.vcpus
        holders = [inst.pnode] if inst.snode is None else [inst.pnode, inst.snode]
        if inst.disk_template in LOCAL_STORAGE_TEMPLATES:
            for h in holders:
                spindles[h] += inst.spindle_use
        ptags[inst.pnode].update(exclusion_tags(inst, excl_prefixes))
        if inst.snode is not None:
            per_peer[inst.snode][inst.pnode] += (
                inst.mem if (inst.auto_balance and not inst.offline) else 0
            )
    nodes: dict[str, _Node] = {}
    for bn in cluster.nodes:
        f = facts[bn.name]
        peers = dict(per_peer[bn.name])
        nodes[bn.name] = _Node(
            name=bn.name,
            online=not bn.htools_offline,
            t_mem=bn.t_mem,
            f_mem=bn.f_mem,
            over=bn.f_mem - f.unallocated,
            stopped_mem=stopped[bn.name],
            t_dsk=bn.t_dsk,
            f_dsk=bn.f_dsk,
            t_cpu=bn.t_cpu,
            cpu_speed=bn.cpu_speed,
            used_cpus=bn.os_cpus + vcpus[bn.name],
            spindle_den=spindle_ratio[bn.name] * bn.spindles,
            inst_spindles=spindles[bn.name],
            n_pri=len(f.primaries),
            n_sec=len(f.secondaries),
            per_peer=peers,
            r_mem=max(peers.values(), default=0),
            ptags=ptags[bn.name],
            locations=location_tags(bn, loc_prefixes),
            values=(
                f.p_mem,
                f.p_mem_forth,
                f.p_dsk,
                f.p_rem,
                f.p_cpu,
                float(len(f.primaries)),
                float(len(f.primaries) + len(f.secondaries)),
                f.spindles,
            ),
        )
    online = [n for n in cluster.nodes if not n.htools_offline]
    stats = tuple(
        _stat([nodes[n.name].values[m] for n in online]) for m in range(len(_STD_METRICS))
    )
    loc_excl: Counter[tuple[str, str]] = Counter()
    for n in online:
        loc_excl.update(facts[n.name].loc_excl)
    breakdown = score(cluster)
    components = {name: float(getattr(breakdown, name)) for name in WEIGHTS}
    return Baseline(
        cluster=cluster,
        nodes=nodes,
        online_index={n.name: i for i, n in enumerate(online)},
        stats=stats,
        base_std=tuple(components[names[0]] for _, names in _STD_METRICS),
        components=components,
        total=breakdown.total,
        excl_prefixes=excl_prefixes,
        loc_excl=loc_excl,
        instances={i.name: i for i in cluster.instances},
    )


def _stat(values: list[float]) -> _Stat:
    if not values:
        return _Stat(values=(), center=math.nan, s1=math.nan, s2=math.nan)
    center = sum(values) / len(values)
    s1 = sum(v - center for v in values)
    s2 = sum((v - center) * (v - center) for v in values)
    return _Stat(values=tuple(values), center=center, s1=s1, s2=s2)


def _values(n: _Node) -> tuple[float, ...]:
    """The scored per-node values, with `reactors.htools.score`'s own arithmetic."""
    return (
        ratio(n.f_mem - n.over, n.t_mem),
        ratio(n.f_mem - n.stopped_mem, n.t_mem),
        free_ratio(n.f_dsk, n.t_dsk),
        ratio(n.r_mem, n.t_mem),
        ratio(ratio(n.used_cpus, n.t_cpu), n.cpu_speed),
        float(n.n_pri),
        float(n.n_pri + n.n_sec),
        ratio(n.inst_spindles, n.spindle_den),
    )


def _with_values(n: _Node) -> _Node:
    return replace(n, values=_values(n))


def _spindle_use(inst: NewInstance) -> int:
    return inst.spindle_use if inst.disk_template in LOCAL_STORAGE_TEMPLATES else 0


def _add_primary(n: _Node, inst: NewInstance) -> _Node:
    return _with_values(
        replace(
            n,
            f_mem=n.f_mem - (inst.mem if inst.running else 0),
            stopped_mem=n.stopped_mem + (0 if inst.running else inst.mem),
            f_dsk=n.f_dsk - inst.dsk,
            used_cpus=n.used_cpus + (0 if inst.offline else inst.vcpus),
            inst_spindles=n.inst_spindles + _spindle_use(inst),
            n_pri=n.n_pri + 1,
        )
    )


def _reserved(inst: NewInstance) -> int:
    return inst.mem if (inst.auto_balance and not inst.offline) else 0


def _add_secondary(n: _Node, inst: NewInstance, primary: str) -> _Node:
    peer = n.per_peer.get(primary, 0) + _reserved(inst)
    return _with_values(
        replace(
            n,
            f_dsk=n.f_dsk - inst.dsk,
            inst_spindles=n.inst_spindles + _spindle_use(inst),
            n_sec=n.n_sec + 1,
            r_mem=max(n.r_mem, peer),
        )
    )


def _remove_secondary(n: _Node, inst: NewInstance, primary: str) -> _Node:
    peers = dict(n.per_peer)
    peers[primary] = peers.get(primary, 0) - _reserved(inst)
    return _with_values(
        replace(
            n,
            f_dsk=n.f_dsk + inst.dsk,
            inst_spindles=n.inst_spindles - _spindle_use(inst),
            n_sec=n.n_sec - 1,
            per_peer=peers,
            r_mem=max(peers.values(), default=0),
        )
    )


def _excl_tags_of(tags: Iterable[str], prefixes: tuple[str, ...]) -> list[str]:
    return [t for t in tags if any(t.startswith(p) for p in prefixes)]


def _repeats(counts: Counter[_K], added: list[_K]) -> int:
    """How much `sum(counts) - len(counts)` grows when `added` are counted too."""
    seen: Counter[_K] = Counter()
    grows = 0
    for key in added:
        if counts[key] + seen[key] > 0:
            grows += 1
        seen[key] += 1
    return grows


# ------------------------------------------------------------ changed clusters


def with_instance(
    cluster: BCluster, *, inst: BInstance, primary: str, secondary: str | None
) -> BCluster:
    """The cluster with `inst` added on (primary, secondary): free memory and disk
    of both nodes taken, as `reactors.htools.model.from_state` would compute them."""
    placed = replace(inst, pnode=primary, snode=secondary)

    def take(node: BNode) -> BNode:
        mem = inst.mem if (node.name == primary and inst.running) else 0
        dsk = inst.dsk if node.name in (primary, secondary) else 0
        return replace(node, f_mem=node.f_mem - mem, f_dsk=node.f_dsk - dsk)

    return replace(
        cluster,
        nodes=tuple(take(n) for n in cluster.nodes),
        instances=(*cluster.instances, placed),
    )


def with_secondary(cluster: BCluster, *, instance: str, secondary: str) -> BCluster:
    """The cluster with `instance`'s second copy moved to `secondary`."""
    inst = next(i for i in cluster.instances if i.name == instance)
    old = inst.snode

    def shift(node: BNode) -> BNode:
        if node.name == old:
            return replace(node, f_dsk=node.f_dsk + inst.dsk)
        if node.name == secondary:
            return replace(node, f_dsk=node.f_dsk - inst.dsk)
        return node

    return replace(
        cluster,
        nodes=tuple(shift(n) for n in cluster.nodes),
        instances=tuple(
            replace(i, snode=secondary) if i.name == instance else i for i in cluster.instances
        ),
    )
