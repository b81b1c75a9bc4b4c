"""The balancer: a sequence of instance moves that lowers Ganeti's cluster score
(hbal's `compCV`, as `reactors.cluster_score` computes it), never breaking N+1 or
any placement rule, preferring moves that copy less data.

Move kinds (the same as hbal's for DRBD instances, named after what they do):
  - failover: primary and secondary swap (one live migration, no data copied);
  - replace-secondary T: the second copy moves to T (the disk is resynced to T);
  - failover-and-replace T: failover, then the new secondary is T (the old
    primary's copy is dropped; one migration, one resync);
  - replace-and-failover T: the secondary becomes T, then failover to T (the old
    primary keeps a copy as the new secondary; one resync, one migration);
  - replace-primary T: failover, replace the secondary (the old primary) by T,
    failover to T (two migrations, one resync).

The search is hbal's: greedy, every step tries every instance with every move kind
and every target node and keeps the lowest resulting score; it stops when no move
gains more than `min_gain` (once the score is below `min_gain_limit`; above it any
gain goes on, as hbal's defaults do) or after `max_moves`. What makes it fast is
that no candidate is scored from scratch: a move changes two or three nodes, so its
effect on every per-node statistic is computed from those nodes alone, from running
sums of deviations kept per step (the idea of `reactors.score_delta`, extended to
failovers and to moves that take a copy off a node); target-side checks and changes
are derived once per step and node, and candidates whose own side already rules
them out (memory, disk, vCPU ratio, N+1, failure domains) are never scored. Most
candidates are not scored at all: a candidate's delta has a lower bound that is the
sum of a bound for the instance's own side (its parts that do not depend on the
cluster-wide means kept from step to step while its nodes are unchanged, and
re-evaluated at each step's means) and one for the target node (`_Bounds`), and
candidates are visited best bound first until no bound can come within
`cost_tolerance` of the best delta found; the result is the one of scoring every
candidate. Among moves whose gains are within `cost_tolerance` (relative) of the
best, the one that copies the least data, then migrates the fewest times, wins. A
final pass folds repeated moves of one instance into one where the rules allow, so
the plan ends in the same placement with fewer moves and less data copied.

Rules every intermediate placement keeps (those of `reactors.placement_bridge`):
a node taking a primary has the memory (all its primaries, running or not, within
t_mem - n_mem) and the vCPU ratio; a node taking a copy has the disk; every node
that takes anything keeps N+1 (its free memory covers, for each peer, the
auto-balanced instances that peer would fail over to it); a pair never shares a
failure domain; both copies are never on one node; offline, drained and `avoid`
nodes take nothing (instances on them are moved off, which the score rewards).
Exclusion tags are scored, not forbidden, as in placement. The corral jobs that
carry a composite move out check their own intermediate steps; those are checked
here too (the primary of a replace keeps N+1; a replace-primary's temporary
primary has the memory).

Pure: no I/O, no logging, no asyncio; it plans, it never changes anything. Comes
after `reactors.balance_model` (a `BCluster`, from the folded state or from an
htools file); read by `reactors.balance_apply` (rounds and jobs) and the
`corral balance` command.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from enum import StrEnum

from reactors.balance_model import MIRRORED_TEMPLATE, BCluster, BInstance, BNode
from reactors.cluster_score import (
    WEIGHTS,
    _excl_tags,
    _location_tags,
    _spindle_ratio,
    n1_failures,
    score,
)

# Metric order of the per-node values whose standard deviation is scored, and the
# summed weight of the score components each one feeds (see cluster_score).
_M_WEIGHT = (
    WEIGHTS["free_mem_cv"],
    WEIGHTS["free_mem_cv_forth"],
    WEIGHTS["free_disk_cv"] + WEIGHTS["free_disk_cv_forth"],
    WEIGHTS["reserved_mem_cv"],
    WEIGHTS["vcpu_ratio_cv"] + WEIGHTS["vcpu_ratio_cv_forth"],
    WEIGHTS["cpu_load_cv"] + WEIGHTS["mem_load_cv"] + WEIGHTS["net_load_cv"],
    WEIGHTS["disk_load_cv"],
    WEIGHTS["spindles_cv"] + WEIGHTS["spindles_cv_forth"],
)
_NM = len(_M_WEIGHT)
_W_N1 = WEIGHTS["n1_cnt"]
_W_RTOTAL = WEIGHTS["reserved_mem_rtotal"]
_W_OFF_ALL = WEIGHTS["offline_all_cnt"]
_W_OFF_PRI = WEIGHTS["offline_pri_cnt"]
_W_TAGS = WEIGHTS["pri_tags_score"]
_W_LOC = WEIGHTS["location_score"]
_W_LOC_EXCL = WEIGHTS["location_exclusion_score"]

DEFAULT_MIN_GAIN = 0.01
DEFAULT_MIN_GAIN_LIMIT = 0.1
DEFAULT_COST_TOLERANCE = 0.002
_EPS = 1e-9


class MoveKind(StrEnum):
    FAILOVER = "failover"
    REPLACE_SECONDARY = "replace-secondary"
    FAILOVER_AND_REPLACE = "failover-and-replace"
    REPLACE_AND_FAILOVER = "replace-and-failover"
    REPLACE_PRIMARY = "replace-primary"


class StepKind(StrEnum):
    """The operations a move is made of, in order: a live migration (primary and
    secondary swap) or a change of secondary to a named node."""

    MIGRATE = "migrate"
    REPLACE_SECONDARY = "replace-secondary"


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveStep:
    kind: StepKind
    node: str | None = None  # the new secondary of a REPLACE_SECONDARY


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    """One instance move; `score_after` is the cluster score once it (and every
    earlier move of the plan) is done."""

    instance: str
    kind: MoveKind
    old_primary: str
    old_secondary: str
    new_primary: str
    new_secondary: str
    data_mib: int
    migrations: int
    score_after: float

    @property
    def nodes(self) -> frozenset[str]:
        return frozenset(
            (self.old_primary, self.old_secondary, self.new_primary, self.new_secondary)
        )

    def steps(self) -> tuple[MoveStep, ...]:
        """The operations, in order, that carry the move out."""
        mig = MoveStep(kind=StepKind.MIGRATE)
        if self.kind is MoveKind.FAILOVER:
            return (mig,)
        if self.kind is MoveKind.REPLACE_SECONDARY:
            return (MoveStep(kind=StepKind.REPLACE_SECONDARY, node=self.new_secondary),)
        if self.kind is MoveKind.FAILOVER_AND_REPLACE:
            return (mig, MoveStep(kind=StepKind.REPLACE_SECONDARY, node=self.new_secondary))
        if self.kind is MoveKind.REPLACE_AND_FAILOVER:
            return (MoveStep(kind=StepKind.REPLACE_SECONDARY, node=self.new_primary), mig)
        return (mig, MoveStep(kind=StepKind.REPLACE_SECONDARY, node=self.new_primary), mig)


@dataclass(frozen=True, slots=True, kw_only=True)
class BalancePlan:
    moves: tuple[Move, ...]
    score_before: float
    score_after: float
    data_mib: int
    migrations: int
    n1_failures_before: tuple[str, ...]
    n1_failures_after: tuple[str, ...]
    cluster_after: BCluster
    candidates_scored: int
    stopped_by: str

    def placements(self) -> dict[str, tuple[str, str | None]]:
        """Instance -> (primary, secondary) once every move is done."""
        return {i.name: (i.pnode, i.snode) for i in self.cluster_after.instances}


# --------------------------------------------------------------------------- state


_MIGRATIONS = {
    MoveKind.FAILOVER: 1,
    MoveKind.REPLACE_SECONDARY: 0,
    MoveKind.FAILOVER_AND_REPLACE: 1,
    MoveKind.REPLACE_AND_FAILOVER: 1,
    MoveKind.REPLACE_PRIMARY: 2,
}
_KIND_ORDER = {k: n for n, k in enumerate(MoveKind)}


@dataclass(frozen=True, slots=True)
class _Inst:
    name: str
    mem: int
    run_mem: int  # memory counted in htools' f_mem (running)
    stop_mem: int  # memory of a stopped primary (free memory "forth")
    dsk: int
    vcpus: int  # vCPUs counted by htools (not ADMIN_offline)
    all_vcpus: int  # vCPUs counted by corral's vcpu ratio
    su: int
    res: int  # N+1 reservation on its secondary
    excl: tuple[str, ...]


class _Work:
    """The mutable working copy of the cluster the planner moves instances in."""

    def __init__(self, cluster: BCluster, avoid: frozenset[str]) -> None:
        nodes = cluster.nodes
        self.names = [n.name for n in nodes]
        self.index = {n.name: k for k, n in enumerate(nodes)}
        n_nodes = len(nodes)
        self.online = [not n.htools_offline for n in nodes]
        self.usable = [not n.htools_offline and n.name not in avoid for n in nodes]
        for n in nodes:
            if not n.htools_offline and (n.t_mem <= 0 or n.t_cpu <= 0 or n.cpu_speed <= 0):
                raise ValueError(f"node {n.name} has no memory or CPUs to balance with")
        ratio = _spindle_ratio(cluster)
        excl_prefixes = cluster.exclusion_prefixes()
        loc_prefixes = cluster.location_prefixes()
        self.t_mem = [float(n.t_mem) for n in nodes]
        self.t_dsk = [float(n.t_dsk) for n in nodes]
        self.speed = [n.cpu_speed for n in nodes]
        self.t_cpu = [n.t_cpu for n in nodes]
        self.sden = [ratio[n.name] * n.spindles for n in nodes]
        self.vcpu_limit = [n.t_cpu * cluster.vcpu_ratio for n in nodes]
        self.locs = [_location_tags(n, loc_prefixes) for n in nodes]
        self.has_locs = any(self.locs)
        self.f_mem = [n.f_mem for n in nodes]
        self.f_dsk = [n.f_dsk for n in nodes]
        self.stopped = [0] * n_nodes
        self.used_cpus = [n.os_cpus for n in nodes]
        self.all_vcpus = [0] * n_nodes
        self.ispind = [0] * n_nodes
        self.n_pri = [0] * n_nodes
        self.n_sec = [0] * n_nodes
        self.rows: list[dict[int, int]] = [{} for _ in nodes]
        self.ptags: list[Counter[str]] = [Counter() for _ in nodes]
        self.insts: list[_Inst] = []
        self.p: list[int] = []
        self.s: list[int] = []
        self.movable: list[bool] = []
        self.fixed_sp = [0] * n_nodes
        for inst in cluster.instances:
            pk = self.index[inst.pnode]
            sk = self.index[inst.snode] if inst.snode is not None else -1
            local = inst.disk_template in ("drbd", "plain")
            mine = _Inst(
                name=inst.name,
                mem=inst.mem,
                run_mem=inst.mem if inst.running else 0,
                stop_mem=0 if inst.running else inst.mem,
                dsk=inst.dsk,
                vcpus=0 if inst.offline else inst.vcpus,
                all_vcpus=inst.vcpus,
                su=inst.spindle_use if local else 0,
                res=inst.mem if (inst.auto_balance and not inst.offline) else 0,
                excl=tuple(_excl_tags(inst, excl_prefixes)),
            )
            self.insts.append(mine)
            self.p.append(pk)
            self.s.append(sk)
            self.movable.append(inst.disk_template == MIRRORED_TEMPLATE and sk >= 0 and sk != pk)
            self.stopped[pk] += mine.stop_mem
            self.used_cpus[pk] += mine.vcpus
            self.all_vcpus[pk] += mine.all_vcpus
            self.ispind[pk] += mine.su
            self.n_pri[pk] += 1
            self.ptags[pk].update(mine.excl)
            if sk >= 0:
                self.ispind[sk] += mine.su
                self.n_sec[sk] += 1
                row = self.rows[sk]
                row[pk] = row.get(pk, 0) + mine.res
        # corral's free memory: what is left once every primary, running or not,
        # has its memory (htools' f_mem only takes running ones off).
        self.c_free = [self.f_mem[k] - self.stopped[k] for k in range(n_nodes)]
        self.r_mem = [max(r.values(), default=0) for r in self.rows]
        self.r2 = [_second(r) for r in self.rows]
        self.loc_excl: Counter[tuple[str, str]] = Counter()
        for mine, pk in zip(self.insts, self.p, strict=True):
            if self.online[pk]:
                for loc in self.locs[pk]:
                    for e in mine.excl:
                        self.loc_excl[(loc, e)] += 1
        self.online_idx = [k for k in range(n_nodes) if self.online[k]]
        self.vals = [self._values(k) for k in range(n_nodes)]
        self.version = [0] * n_nodes  # bumped whenever a node's figures change

    # ---------------------------------------------------------------- values

    def _values(self, k: int) -> tuple[float, ...]:
        return self.node_values(
            k,
            self.f_mem[k],
            self.stopped[k],
            self.f_dsk[k],
            self.used_cpus[k],
            self.ispind[k],
            self.n_pri[k],
            self.n_sec[k],
            self.r_mem[k],
        )

    def node_values(
        self,
        k: int,
        f_mem: int,
        stopped: int,
        f_dsk: int,
        used_cpus: int,
        ispind: int,
        n_pri: int,
        n_sec: int,
        r_mem: int,
    ) -> tuple[float, ...]:
        t_mem = self.t_mem[k]
        t_dsk = self.t_dsk[k]
        sden = self.sden[k]
        return (
            f_mem / t_mem,
            (f_mem - stopped) / t_mem,
            1.0 if t_dsk == 0 else f_dsk / t_dsk,
            r_mem / t_mem,
            used_cpus / self.t_cpu[k] / self.speed[k],
            float(n_pri),
            float(n_pri + n_sec),
            ispind / sden if sden else (math.nan if ispind == 0 else math.inf),
        )

    def total(self) -> float:
        """The exact current score, from the per-node values (two-pass)."""
        on = self.online_idx
        tot = 0.0
        n = len(on)
        for m in range(_NM):
            xs = [self.vals[k][m] for k in on]
            mean = sum(xs) / n
            tot += _M_WEIGHT[m] * math.sqrt(sum((x - mean) * (x - mean) for x in xs) / n)
        for k in range(len(self.names)):
            if self.online[k]:
                if self.f_mem[k] < self.r_mem[k]:
                    tot += _W_N1 * (self.n_pri[k] + self.n_sec[k])
                tot += _W_RTOTAL * self.vals[k][3]
                tot += _W_TAGS * (sum(self.ptags[k].values()) - len(self.ptags[k]))
            else:
                tot += _W_OFF_ALL * (self.n_pri[k] + self.n_sec[k]) + _W_OFF_PRI * self.n_pri[k]
        if self.has_locs:
            for i, _inst in enumerate(self.insts):
                pk, sk = self.p[i], self.s[i]
                if self.online[pk] and sk >= 0:
                    tot += _W_LOC * len(self.locs[pk] & self.locs[sk])
            tot += _W_LOC_EXCL * (sum(self.loc_excl.values()) - len(self.loc_excl))
        return tot

    # ---------------------------------------------------------------- moving

    def new_r(self, k: int, dec: int, dec_by: int, inc: int, inc_by: int) -> int:
        """r_mem of node k once peer `dec` reserves `dec_by` less and peer `inc`
        `inc_by` more (-1: none)."""
        row = self.rows[k]
        r = self.r_mem[k]
        if dec >= 0 and dec_by:
            cur = row.get(dec, 0)
            if cur == r:
                r = max(cur - dec_by, self.r2[k])
        if inc >= 0:
            r = max(r, row.get(inc, 0) + inc_by)
        return r

    def apply(self, i: int, new_p: int, new_s: int) -> None:
        inst = self.insts[i]
        old_p, old_s = self.p[i], self.s[i]
        touched = {old_p, old_s, new_p, new_s}
        # take the instance off
        self._pri(old_p, inst, -1)
        self._sec(old_s, old_p, inst, -1)
        self._pri(new_p, inst, +1)
        self._sec(new_s, new_p, inst, +1)
        self.p[i], self.s[i] = new_p, new_s
        for k in touched:
            self.version[k] += 1
            row = self.rows[k]
            for peer in [q for q, v in row.items() if v == 0]:
                del row[peer]
            self.r_mem[k] = max(row.values(), default=0)
            self.r2[k] = _second(row)
            self.vals[k] = self._values(k)

    def _pri(self, k: int, inst: _Inst, sign: int) -> None:
        self.f_mem[k] -= sign * inst.run_mem
        self.c_free[k] -= sign * inst.mem
        self.stopped[k] += sign * inst.stop_mem
        self.f_dsk[k] -= sign * inst.dsk
        self.used_cpus[k] += sign * inst.vcpus
        self.all_vcpus[k] += sign * inst.all_vcpus
        self.ispind[k] += sign * inst.su
        self.n_pri[k] += sign
        if sign > 0:
            self.ptags[k].update(inst.excl)
        else:
            self.ptags[k].subtract(inst.excl)
            for e in inst.excl:
                if self.ptags[k][e] <= 0:
                    del self.ptags[k][e]
        if self.online[k] and inst.excl:
            for loc in self.locs[k]:
                for e in inst.excl:
                    self.loc_excl[(loc, e)] += sign
                    if self.loc_excl[(loc, e)] <= 0:
                        del self.loc_excl[(loc, e)]

    def _sec(self, k: int, peer: int, inst: _Inst, sign: int) -> None:
        self.f_dsk[k] -= sign * inst.dsk
        self.ispind[k] += sign * inst.su
        self.n_sec[k] += sign
        row = self.rows[k]
        row[peer] = row.get(peer, 0) + sign * inst.res


def _second(row: dict[int, int]) -> int:
    """The largest value of `row` once one occurrence of its maximum is left out."""
    best = second = 0
    for v in row.values():
        if v > best:
            best, second = v, best
        elif v > second:
            second = v
    return second


# --------------------------------------------------------------------------- search


@dataclass(slots=True)
class _Stats:
    """Per metric: the current mean, the number of online nodes, the current
    standard deviation; deviations of candidate values are taken from the mean."""

    center: list[float]
    std: list[float]
    n: int


def _stats(work: _Work) -> _Stats:
    on = work.online_idx
    n = len(on)
    center: list[float] = []
    std: list[float] = []
    for m in range(_NM):
        xs = [work.vals[k][m] for k in on]
        mean = sum(xs) / n
        center.append(mean)
        std.append(math.sqrt(sum((x - mean) * (x - mean) for x in xs) / n))
    return _Stats(center=center, std=std, n=n)


@dataclass(frozen=True, slots=True)
class _Cand:
    delta: float
    data: int
    migrations: int
    kind: MoveKind
    inst: int
    new_p: int
    new_s: int


class _Search:
    def __init__(self, work: _Work) -> None:
        self.w = work
        self.scored = 0
        self.stats = _stats(work)
        self.vn: list[float] = []
        self.memo: dict[tuple[int, ...], tuple[tuple[tuple[int, float], ...], float]] = {}
        self.best_delta = -_EPS
        self.keep = 1.0
        self.tol = 0.0
        self.pool: list[_Cand] = []
        self.owns: dict[int, _Own] = {}
        self.excl_ids: dict[tuple[str, ...], int] = {(): 0}
        self.exact: dict[int, _Exact] = {}

    def node_delta(
        self,
        k: int,
        dfm: int,
        dstop: int,
        ddsk: int,
        dcpu: int,
        dsp: int,
        dnp: int,
        dns: int,
        new_r: int,
        acc: list[float],
    ) -> float:
        """Adds node k's change of every scored per-node value to `acc` (d1 and d2
        per metric, interleaved) and returns the change of the scalar components.
        Memoised for the step: many candidates share a node change."""
        key = (k, dfm, dstop, ddsk, dcpu, dsp, dnp, dns, new_r)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = self._node_delta(*key)
        entries, scalar = hit
        for j, v in entries:
            acc[j] += v
        return scalar

    def _node_delta(
        self,
        k: int,
        dfm: int,
        dstop: int,
        ddsk: int,
        dcpu: int,
        dsp: int,
        dnp: int,
        dns: int,
        new_r: int,
    ) -> tuple[tuple[tuple[int, float], ...], float]:
        w = self.w
        np_old, ns_old = w.n_pri[k], w.n_sec[k]
        np_new, ns_new = np_old + dnp, ns_old + dns
        if not w.online[k]:
            return (), _W_OFF_ALL * (dnp + dns) + _W_OFF_PRI * dnp
        f_new = w.f_mem[k] + dfm
        old = w.vals[k]
        new = w.node_values(
            k,
            f_new,
            w.stopped[k] + dstop,
            w.f_dsk[k] + ddsk,
            w.used_cpus[k] + dcpu,
            w.ispind[k] + dsp,
            np_new,
            ns_new,
            new_r,
        )
        c = self.stats.center
        entries: list[tuple[int, float]] = []
        for m in range(_NM):
            nv = new[m]
            ov = old[m]
            if nv != ov:
                cm = c[m]
                entries.append((2 * m, nv - ov))
                entries.append((2 * m + 1, (nv - cm) * (nv - cm) - (ov - cm) * (ov - cm)))
        scalar = _W_RTOTAL * (new[3] - old[3])
        fail_old = w.f_mem[k] < w.r_mem[k]
        fail_new = f_new < new_r
        if fail_old or fail_new:
            scalar += _W_N1 * ((np_new + ns_new) * fail_new - (np_old + ns_old) * fail_old)
        return tuple(entries), scalar

    def combine(self, acc: list[float]) -> float:
        n = self.stats.n
        sqrt = math.sqrt
        out = 0.0
        it = iter(acc)
        for weight, std, vn, d1, d2 in zip(_M_WEIGHT, self.stats.std, self.vn, it, it, strict=True):
            if d1 == 0.0 and d2 == 0.0:
                continue
            var = (vn + d2) / n - (d1 / n) * (d1 / n)
            out += weight * ((sqrt(var) if var > 0.0 else 0.0) - std)
        return out

    def tags_delta(self, inst: _Inst, src: int, dst: int) -> float:
        """The change of the tag and location-exclusion components when the
        instance's primary moves from src to dst."""
        w = self.w
        if not inst.excl:
            return 0.0
        out = 0.0
        if w.online[src]:
            tags = w.ptags[src]
            out -= _W_TAGS * sum(1 for e in inst.excl if tags[e] >= 2)
        if w.online[dst]:
            tags = w.ptags[dst]
            out += _W_TAGS * sum(1 for e in inst.excl if tags[e] >= 1)
        if w.has_locs:
            change: Counter[tuple[str, str]] = Counter()
            if w.online[src]:
                for loc in w.locs[src]:
                    for e in inst.excl:
                        change[(loc, e)] -= 1
            if w.online[dst]:
                for loc in w.locs[dst]:
                    for e in inst.excl:
                        change[(loc, e)] += 1
            for key, d in change.items():
                before = w.loc_excl.get(key, 0)
                after = before + d
                out += _W_LOC_EXCL * (
                    (after - (1 if after > 0 else 0)) - (before - (1 if before > 0 else 0))
                )
        return out

    def loc_delta(self, old_p: int, old_s: int, new_p: int, new_s: int) -> float:
        w = self.w
        if not w.has_locs:
            return 0.0
        before = len(w.locs[old_p] & w.locs[old_s]) if w.online[old_p] else 0
        after = len(w.locs[new_p] & w.locs[new_s]) if w.online[new_p] else 0
        return _W_LOC * (after - before)

    # ------------------------------------------------------------- the step

    def best(self, *, tolerance: float) -> list[_Cand]:
        """Every candidate within `tolerance` of the best gain (the best first).

        Each candidate is (the instance's own side, a target node; none for a
        failover). Its delta is bounded from below by the sum of a bound per side
        (`_Bounds`); own sides are visited in the order of their best possible
        bound, their targets in the order of theirs, and a visit stops once no
        further candidate can get within `tolerance` of the best gain found so
        far. What is visited is scored exactly, so the result is the one of
        scoring every candidate."""
        w = self.w
        self.stats = _stats(w)
        self.vn = [std * std * self.stats.n for std in self.stats.std]  # n V, for combine
        self.memo = {}
        self.exact = {}
        self.best_delta = -_EPS
        self.keep = 1 - tolerance
        self.tol = tolerance
        self.pool = []
        targets = [k for k in range(len(w.names)) if w.usable[k]]
        owns = [self._own(i) for i in range(len(w.insts)) if w.movable[i]]
        bounds = _Bounds(self, owns, targets)
        order = bounds.order()
        keep = self.keep
        evaluators = {
            MoveKind.FAILOVER: self._eval_fo,
            MoveKind.REPLACE_AND_FAILOVER: self._eval_rf,
            MoveKind.REPLACE_PRIMARY: self._eval_rp,
        }
        for key, lb_o, kind, own, tl, v, others in order:
            cutoff = self.best_delta * keep + _MARGIN
            if key >= cutoff:
                break
            if v is not None:
                lb_o = max(lb_o, bounds.own_bound(v, others))
                if lb_o + tl[0][0] >= cutoff:
                    continue
            if kind in _SEC_KINDS:
                self._scan_copy(own, kind, lb_o, tl)
                continue
            evaluate = evaluators[kind]
            for lb_t, t in tl:
                if lb_o + lb_t >= self.best_delta * keep + _MARGIN:
                    break
                if t != own.p and t != own.s:
                    evaluate(own, t)
        limit = self.best_delta * keep
        return sorted(
            (c for c in self.pool if c.delta <= limit + 1e-12),
            key=lambda c: c.delta,
        )

    def _consider(
        self, d: float, data: int, migrations: int, kind: MoveKind, i: int, new_p: int, new_s: int
    ) -> None:
        self.scored += 1
        if d < self.best_delta * self.keep:
            cand = _Cand(d, data, migrations, kind, i, new_p, new_s)
            self.best_delta = self._push(self.pool, cand, self.best_delta, self.tol)

    # ------------------------------------------------------------ own sides

    def _own(self, i: int) -> _Own:
        """The instance's own side (kept from earlier steps while its nodes are
        unchanged): which kinds its nodes allow and, per kind, the bound parts."""
        w = self.w
        p, s = w.p[i], w.s[i]
        stamp = (p, s, w.version[p], w.version[s])
        hit = self.owns.get(i)
        if hit is not None and hit.stamp == stamp:
            return hit
        inst = w.insts[i]
        mem, res, dsk = inst.mem, inst.res, inst.dsk
        s_can_pri = (
            w.usable[s]
            and w.c_free[s] >= mem
            and w.all_vcpus[s] + inst.all_vcpus <= w.vcpu_limit[s]
        )
        p_n1_ok = not w.online[p] or w.r_mem[p] <= w.c_free[p]
        r_s_less = w.new_r(s, p, res, -1, 0)  # s without this instance's reservation
        s_pri_ok = s_can_pri and r_s_less <= w.c_free[s] - mem
        loc_own = -_W_LOC * len(w.locs[p] & w.locs[s]) if w.has_locs and w.online[p] else 0.0
        tags_src = self._tags_src(inst, p)
        sec_key = (inst.dsk, inst.su, inst.res)
        excl_id = self.excl_ids.setdefault(inst.excl, len(self.excl_ids))
        pri_key = (
            inst.run_mem,
            inst.stop_mem,
            inst.dsk,
            inst.vcpus,
            inst.su,
            inst.all_vcpus,
            excl_id,
        )
        sides: list[tuple[MoveKind, _CSide, tuple[int, ...]]] = []
        cf = self._cf
        if s_pri_ok:
            r_p = w.new_r(p, -1, 0, s, res)
            if self._ok_gain(p, r_p, w.c_free[p] + mem):
                d1, q = [0.0] * _NM, [0.0] * _NM
                sc = cf(p, inst.run_mem, -inst.stop_mem, 0, -inst.vcpus, 0, -1, 1, r_p, d1, q)
                sc += cf(s, -inst.run_mem, inst.stop_mem, 0, inst.vcpus, 0, 1, -1, r_s_less, d1, q)
                sides.append((MoveKind.FAILOVER, (d1, q, None, sc + tags_src + loc_own), ()))
            d1, q = [0.0] * _NM, [0.0] * _NM
            sc = cf(
                p,
                inst.run_mem,
                -inst.stop_mem,
                dsk,
                -inst.vcpus,
                -inst.su,
                -1,
                0,
                w.r_mem[p],
                d1,
                q,
            )
            sc += cf(s, -inst.run_mem, inst.stop_mem, 0, inst.vcpus, 0, 1, -1, r_s_less, d1, q)
            sides.append(
                (MoveKind.FAILOVER_AND_REPLACE, (d1, q, None, sc + tags_src + loc_own), sec_key)
            )
        if p_n1_ok:
            d1, q = [0.0] * _NM, [0.0] * _NM
            sc_ls = cf(s, 0, 0, dsk, 0, -inst.su, 0, -1, r_s_less, d1, q)
            sides.append((MoveKind.REPLACE_SECONDARY, (d1, q, None, sc_ls + loc_own), sec_key))
            # replace-and-failover: p becomes the secondary, with t as a new peer
            r_lo = max(w.r_mem[p], res)
            r_hi = w.c_free[p] + mem if w.online[p] else r_lo
            if r_lo <= r_hi:
                d1, q = d1.copy(), q.copy()
                sc = cf(
                    p, inst.run_mem, -inst.stop_mem, 0, -inst.vcpus, 0, -1, 1, r_lo, d1, q, True
                )
                rng = self._rem_range(p, r_lo, r_hi)
                sides.append(
                    (
                        MoveKind.REPLACE_AND_FAILOVER,
                        (d1, q, rng, sc_ls + sc + tags_src + loc_own),
                        pri_key,
                    )
                )
        if s_pri_ok:
            # replace-primary: s keeps its copy, loses p as a peer and takes t
            r_lo = max(r_s_less, res)
            r_hi = w.c_free[s]
            if r_lo <= r_hi:
                d1, q = [0.0] * _NM, [0.0] * _NM
                sc = cf(
                    p,
                    inst.run_mem,
                    -inst.stop_mem,
                    dsk,
                    -inst.vcpus,
                    -inst.su,
                    -1,
                    0,
                    w.r_mem[p],
                    d1,
                    q,
                )
                sc += cf(s, 0, 0, 0, 0, 0, 0, 0, r_lo, d1, q, True)
                rng = self._rem_range(s, r_lo, r_hi)
                sides.append(
                    (MoveKind.REPLACE_PRIMARY, (d1, q, rng, sc + tags_src + loc_own), pri_key)
                )
        own = _Own(
            stamp=stamp,
            i=i,
            inst=inst,
            p=p,
            s=s,
            p_n1_ok=p_n1_ok,
            s_pri_ok=s_pri_ok,
            r_s_less=r_s_less,
            sides=sides,
            coefs=[_coef(side, float(len(w.online_idx))) for _, side, _ in sides],
        )
        self.owns[i] = own
        return own

    def _cf(
        self,
        k: int,
        dfm: int,
        dstop: int,
        ddsk: int,
        dcpu: int,
        dsp: int,
        dnp: int,
        dns: int,
        new_r: int,
        d1: list[float],
        q: list[float],
        skip_rem: bool = False,
    ) -> float:
        """Like `_node_delta`, but independent of the current means: adds node k's
        change of each value (d1) and of its square (q) and returns the change of
        the scalar components. `skip_rem`: leave p_rem out (taken as a range)."""
        w = self.w
        np_old, ns_old = w.n_pri[k], w.n_sec[k]
        np_new, ns_new = np_old + dnp, ns_old + dns
        if not w.online[k]:
            return _W_OFF_ALL * (dnp + dns) + _W_OFF_PRI * dnp
        f_new = w.f_mem[k] + dfm
        old = w.vals[k]
        new = w.node_values(
            k,
            f_new,
            w.stopped[k] + dstop,
            w.f_dsk[k] + ddsk,
            w.used_cpus[k] + dcpu,
            w.ispind[k] + dsp,
            np_new,
            ns_new,
            new_r,
        )
        for m in range(_NM):
            nv = new[m]
            ov = old[m]
            if nv != ov and not (skip_rem and m == 3):
                d1[m] += nv - ov
                q[m] += nv * nv - ov * ov
        scalar = _W_RTOTAL * (new[3] - old[3])
        fail_old = w.f_mem[k] < w.r_mem[k]
        fail_new = f_new < new_r
        if fail_old or fail_new:
            scalar += _W_N1 * ((np_new + ns_new) * fail_new - (np_old + ns_old) * fail_old)
        return scalar

    def _rem_range(self, k: int, r_lo: int, r_hi: int) -> tuple[float, float, float] | None:
        """Node k's p_rem (old value, low, high) with its reserved memory anywhere
        in [r_lo, r_hi]; None for an offline node (no p_rem scored)."""
        w = self.w
        if not w.online[k]:
            return None
        return (w.vals[k][3], r_lo / w.t_mem[k], r_hi / w.t_mem[k])

    def _tags_src(self, inst: _Inst, src: int) -> float:
        """A lower bound of `tags_delta(inst, src, any other node)`."""
        w = self.w
        if not inst.excl or not w.online[src]:
            return 0.0
        tags = w.ptags[src]
        out = -_W_TAGS * sum(1 for e in inst.excl if tags[e] >= 2)
        if w.has_locs:
            out -= _W_LOC_EXCL * len(w.locs[src]) * len(inst.excl)
        return out

    def _exact_own(self, own: _Own) -> _Exact:
        """The own side's exact parts for this step (as `node_delta` gives them)."""
        hit = self.exact.get(own.i)
        if hit is not None:
            return hit
        w = self.w
        inst, p, s = own.inst, own.p, own.s
        dsk = inst.dsk
        acc_ls = [0.0] * (2 * _NM)
        sc_ls = self.node_delta(s, 0, 0, dsk, 0, -inst.su, 0, -1, own.r_s_less, acc_ls)
        acc_fr: list[float] = []
        sc_fr = 0.0
        if own.s_pri_ok:
            acc_fr = [0.0] * (2 * _NM)
            sc_fr = self.node_delta(
                p,
                inst.run_mem,
                -inst.stop_mem,
                dsk,
                -inst.vcpus,
                -inst.su,
                -1,
                0,
                w.r_mem[p],
                acc_fr,
            )
            sc_fr += self.node_delta(
                s, -inst.run_mem, inst.stop_mem, 0, inst.vcpus, 0, 1, -1, own.r_s_less, acc_fr
            )
            sc_fr += self.tags_delta(inst, p, s)
        acc_lp = [0.0] * (2 * _NM)
        sc_lp = self.node_delta(
            p, inst.run_mem, -inst.stop_mem, dsk, -inst.vcpus, -inst.su, -1, 0, w.r_mem[p], acc_lp
        )
        hit = self.exact[own.i] = _Exact(
            acc_ls,
            sc_ls,
            acc_fr,
            sc_fr,
            acc_lp,
            sc_lp,
        )
        return hit

    # ---------------------------------------------- one candidate, scored exactly

    def _eval_fo(self, own: _Own, _t: int) -> None:
        """failover: (s, p)."""
        w = self.w
        inst, p, s = own.inst, own.p, own.s
        r_p = w.new_r(p, -1, 0, s, inst.res)
        acc = [0.0] * (2 * _NM)
        sc = self.node_delta(p, inst.run_mem, -inst.stop_mem, 0, -inst.vcpus, 0, -1, 1, r_p, acc)
        sc += self.node_delta(
            s, -inst.run_mem, inst.stop_mem, 0, inst.vcpus, 0, 1, -1, own.r_s_less, acc
        )
        d = sc + self.combine(acc) + self.tags_delta(inst, p, s) + self.loc_delta(p, s, s, p)
        self._consider(d, 0, 1, MoveKind.FAILOVER, own.i, s, p)

    def _scan_copy(
        self, own: _Own, kind: MoveKind, lb_o: float, tl: list[tuple[float, int]]
    ) -> None:
        """Replace-secondary (p, t) or failover-and-replace (s, t), over the
        targets `tl` (lowest bound first) until no further bound can get within
        the tolerance of the best gain."""
        w = self.w
        inst, p, s = own.inst, own.p, own.s
        if kind is MoveKind.REPLACE_SECONDARY:
            if not own.p_n1_ok:
                return
            peer, migrations = p, 0
        else:
            if not own.s_pri_ok:
                return
            peer, migrations = s, 1
        dsk, su, res = inst.dsk, inst.su, inst.res
        f_dsk, r_mem, c_free, rows = w.f_dsk, w.r_mem, w.c_free, w.rows
        locs = w.locs if w.has_locs else None
        keep = self.keep
        node_delta, combine, loc_delta = self.node_delta, self.combine, self.loc_delta
        base: list[float] | None = None
        sc0 = 0.0
        for lb_t, t in tl:
            if lb_o + lb_t >= self.best_delta * keep + _MARGIN:
                break
            if t in (p, s) or f_dsk[t] < dsk or (locs is not None and locs[peer] & locs[t]):
                continue
            r_new = max(r_mem[t], rows[t].get(peer, 0) + res)
            if r_new > c_free[t]:
                continue
            if base is None:
                ex = self._exact_own(own)
                if migrations:
                    base, sc0 = ex.acc_fr, ex.sc_fr
                else:
                    base, sc0 = ex.acc_ls, ex.sc_ls
            acc = base.copy()
            sc = sc0 + node_delta(t, 0, 0, -dsk, 0, su, 0, 1, r_new, acc)
            d = sc + combine(acc) + loc_delta(p, s, peer, t)
            self.scored += 1
            if d < self.best_delta * keep:
                cand = _Cand(d, dsk, migrations, kind, own.i, peer, t)
                self.best_delta = self._push(self.pool, cand, self.best_delta, self.tol)

    def _t_pri_ok(self, inst: _Inst, t: int) -> bool:
        """t can become the primary: disk, memory, vCPU ratio, its own N+1."""
        w = self.w
        return (
            w.f_dsk[t] >= inst.dsk
            and w.c_free[t] - inst.mem >= w.r_mem[t]
            and w.all_vcpus[t] + inst.all_vcpus <= w.vcpu_limit[t]
        )

    def _eval_rf(self, own: _Own, t: int) -> None:
        """replace-and-failover: (t, p)."""
        w = self.w
        inst, p, s = own.inst, own.p, own.s
        if not own.p_n1_ok or not self._t_pri_ok(inst, t):
            return
        if w.has_locs and w.locs[p] & w.locs[t]:
            return
        r_p = w.new_r(p, -1, 0, t, inst.res)
        if w.online[p] and r_p > w.c_free[p] + inst.mem:
            return
        ex = self._exact_own(own)
        acc = ex.acc_ls.copy()
        sc = ex.sc_ls + self.node_delta(
            p, inst.run_mem, -inst.stop_mem, 0, -inst.vcpus, 0, -1, 1, r_p, acc
        )
        sc += self.node_delta(
            t, -inst.run_mem, inst.stop_mem, -inst.dsk, inst.vcpus, inst.su, 1, 0, w.r_mem[t], acc
        )
        d = sc + self.combine(acc) + self.tags_delta(inst, p, t) + self.loc_delta(p, s, t, p)
        self._consider(d, inst.dsk, 1, MoveKind.REPLACE_AND_FAILOVER, own.i, t, p)

    def _eval_rp(self, own: _Own, t: int) -> None:
        """replace-primary: (t, s)."""
        w = self.w
        inst, p, s = own.inst, own.p, own.s
        if not own.s_pri_ok or not self._t_pri_ok(inst, t):
            return
        if w.has_locs and w.locs[s] & w.locs[t]:
            return
        r_t = w.r_mem[t]
        # the replace's new secondary t takes s as its peer
        if max(r_t, w.rows[t].get(s, 0) + inst.res) > w.c_free[t]:
            return
        r_s = w.new_r(s, p, inst.res, t, inst.res)
        if w.online[s] and r_s > w.c_free[s]:
            return
        ex = self._exact_own(own)
        acc = ex.acc_lp.copy()
        sc = ex.sc_lp + self.node_delta(s, 0, 0, 0, 0, 0, 0, 0, r_s, acc)
        sc += self.node_delta(
            t, -inst.run_mem, inst.stop_mem, -inst.dsk, inst.vcpus, inst.su, 1, 0, r_t, acc
        )
        d = sc + self.combine(acc) + self.tags_delta(inst, p, t) + self.loc_delta(p, s, t, s)
        self._consider(d, inst.dsk, 2, MoveKind.REPLACE_PRIMARY, own.i, t, s)

    def _ok_gain(self, k: int, new_r: int, new_free: int) -> bool:
        """A node that gains a reservation keeps N+1 (offline nodes are not checked:
        they keep copies, they take nothing new)."""
        w = self.w
        return not w.online[k] or new_r <= new_free

    @staticmethod
    def _push(pool: list[_Cand], cand: _Cand, best: float, tolerance: float) -> float:
        pool.append(cand)
        if cand.delta < best:
            best = cand.delta
            limit = best * (1 - tolerance)
            pool[:] = [c for c in pool if c.delta <= limit]
        return best


# ------------------------------------------------------------------ bounds


# Margin kept between a bound and the delta it must beat (float rounding).
_MARGIN = 1e-9
_SEC_KINDS = frozenset({MoveKind.REPLACE_SECONDARY, MoveKind.FAILOVER_AND_REPLACE})

# A side's parts, independent of the current means: per metric the change of the
# values (d1) and of their squares (q), p_rem of one node taken over a range
# (old value, low, high) or None, and the scalar's lower bound.
_CSide = tuple[list[float], list[float], tuple[float, float, float] | None, float]


@dataclass(slots=True, kw_only=True)
class _Own:
    """One instance's own side, kept while its nodes are unchanged (`stamp`)."""

    stamp: tuple[int, int, int, int]
    i: int
    inst: _Inst
    p: int
    s: int
    p_n1_ok: bool
    s_pri_ok: bool  # s can take the primary without this instance's reservation
    r_s_less: int
    sides: list[tuple[MoveKind, _CSide, tuple[int, ...]]]
    coefs: list[_Coef]  # per side, its bound's mean-independent parts


@dataclass(slots=True)
class _Exact:
    acc_ls: list[float]  # s loses its copy
    sc_ls: float
    acc_fr: list[float]  # failover, then p loses its copy ([]: not allowed)
    sc_fr: float
    acc_lp: list[float]  # p loses its copy
    sc_lp: float


class _Bounds:
    """Lower bounds of candidate deltas, as the sum of one bound per side.

    For a scored metric with standard deviation sd (variance V = sd^2), a move
    whose two sides change the sums of deviations from the mean by (d1o, d2o)
    and (d1t, d2t) changes the variance by y = (d2o + d2t)/n - ((d1o + d1t)/n)^2,
    which is at least a + b with a = d2o/n - 2 (d1o/n)^2 (b likewise) and at most
    d2o/n + d2t/n. Over the step's range [ymin, ymax] of y, the change of the
    standard deviation, y / (sqrt(V + y) + sd), is at least h(y) = y * k_neg
    (y < 0) or y * k_pos (y >= 0), k_neg = 1 / (sqrt(V + ymin) + sd), k_pos = 1 /
    (sqrt(V + ymax) + sd); h is increasing and concave with h(0) = 0, so h(y) >=
    h(a) + h(b). A side's bound is its scalar's lower bound plus the weighted h
    of its a (or b) per metric. Where a node's reserved memory depends on the
    other side (a new N+1 peer), its p_rem is taken over the whole range the N+1
    rule leaves it and the scalar at the range's low end (reserved memory only
    adds to the score); exclusion tags the target gains only add and count 0.
    A target's own change is separable per metric, so targets are tabulated per
    node, metric and the one instance figure that metric depends on. The slopes
    are the family's (failovers, copy-taking or primary-taking targets), over
    every side of it; an own side about to be visited gets slopes over its own,
    narrower range (`own_bound`), which only tightens its bound."""

    def __init__(self, search: _Search, owns: list[_Own], targets: list[int]) -> None:
        self.search = search
        self.w = search.w
        self.owns = owns
        self.targets = targets
        st = search.stats
        self.center = st.center
        self.n = float(st.n)
        self.std = st.std
        self.var = [sd * sd for sd in st.std]
        self.on = all(math.isfinite(x) for x in st.center) and all(math.isfinite(x) for x in st.std)
        w = self.w
        # per target, the figures its taking a primary is checked against
        self.pri_rules = [
            (t, w.f_dsk[t], w.c_free[t], w.r_mem[t], w.all_vcpus[t], w.vcpu_limit[t])
            for t in targets
        ]

    def order(self) -> list[_Entry]:
        """(bound of the best candidate, own bound, kind, own side, targets with
        their bounds, lowest first, and what `own_bound` tightens the own bound
        with) per own side, lowest first. The own bound here takes the slopes of
        the side's whole family; `own_bound` gives a tighter one."""
        if not self.on:
            every = [(-math.inf, t) for t in self.targets]
            return [
                (-math.inf, -math.inf, kind, o, [(-math.inf, -1)] if not key else every, None, [])
                for o in self.owns
                for kind, _, key in o.sides
            ]
        vecs: list[tuple[MoveKind, _Own, tuple[list[float], list[float], float], tuple[int, ...]]]
        vecs = []
        fam_fo: list[tuple[list[float], list[float], float]] = []
        fam_sec: list[tuple[list[float], list[float], float]] = []
        fam_pri: list[tuple[list[float], list[float], float]] = []
        sec_keys: set[tuple[int, ...]] = set()
        pri_keys: set[tuple[int, ...]] = set()
        vec = self._vec
        for o in self.owns:
            for (kind, _, key), coef in zip(o.sides, o.coefs, strict=True):
                v = vec(coef)
                vecs.append((kind, o, v, key))
                if kind is MoveKind.FAILOVER:
                    fam_fo.append(v)
                elif kind in _SEC_KINDS:
                    fam_sec.append(v)
                    sec_keys.add(key)
                else:
                    fam_pri.append(v)
                    pri_keys.add(key)
        sec_tab = self._sec_tables(sec_keys)
        pri_tab = self._pri_tables(pri_keys)
        no_range = [(0.0, 0.0)] * _NM
        r_sec = self._ranges(sec_tab)
        r_pri = self._ranges(pri_tab)
        k_fo = self._slopes(fam_fo, no_range)
        k_sec = self._slopes(fam_sec, r_sec)
        k_pri = self._slopes(fam_pri, r_pri)
        sec_h = self._apply(sec_tab, k_sec)
        pri_h = self._apply(pri_tab, k_pri)
        sec_lists = {key: self._sec_list(key, sec_h) for key in sec_keys}
        pri_lists = {key: self._pri_list(key, pri_h) for key in pri_keys}
        none = [(0.0, -1)]
        out: list[_Entry] = []
        lb = self._lb
        for kind, o, v, key in vecs:
            if kind is MoveKind.FAILOVER:
                lb_o = lb(v, k_fo)
                tl = none
                others = no_range
            elif kind in _SEC_KINDS:
                lb_o = lb(v, k_sec)
                tl = sec_lists[key]
                others = r_sec
            else:
                lb_o = lb(v, k_pri)
                tl = pri_lists[key]
                others = r_pri
            if tl:
                out.append((lb_o + tl[0][0], lb_o, kind, o, tl, v, others))
        out.sort(key=lambda e: e[0])
        return out

    # ---------------------------------------------------------------- own sides

    def _vec(self, coef: _Coef) -> tuple[list[float], list[float], float]:
        """Per metric a's low and high bound, and the scalar, at the current means
        (from the side's mean-independent coefficients, see `_coef`)."""
        base_lo, base_hi, slope, rng, scalar = coef
        c = self.center
        lows = [a + b * x for a, b, x in zip(base_lo, slope, c, strict=True)]
        highs = [a + b * x for a, b, x in zip(base_hi, slope, c, strict=True)]
        if rng is not None:
            (_, f_lo), (_, f_hi) = self._range_part(rng)
            lows[3] += f_lo / self.n
            highs[3] += f_hi / self.n
        return lows, highs, scalar

    def _range_part(
        self, rng: tuple[float, float, float]
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """((d1 low, d2 low), (d1 high, d2 high)) of a p_rem value anywhere in
        [low, high] instead of `old`."""
        return _range_part(rng, self.center[3])

    # ---------------------------------------------------------------- targets

    def _b(self, m: int, old: float, new: float) -> tuple[float, float]:
        c = self.center[m]
        d1 = new - old
        d2 = (new - c) * (new - c) - (old - c) * (old - c)
        return d2 / self.n - 2.0 * (d1 / self.n) ** 2, d2 / self.n

    def _column(self, m: int, news: list[float]) -> tuple[list[float], list[float]]:
        """Per target (in `targets` order), the low and high of metric m going
        from its current value to `news`."""
        w = self.w
        b = self._b
        lows: list[float] = []
        highs: list[float] = []
        for t, new in zip(self.targets, news, strict=True):
            low, high = b(m, w.vals[t][m], new)
            lows.append(low)
            highs.append(high)
        return lows, highs

    def _sec_tables(self, keys: set[tuple[int, ...]]) -> _Tables:
        """Per metric and figure, per target (None: the target cannot take it):
        (low, high, scalar) of the target taking a copy (p_dsk: disk; p_rem:
        reservation, over the range; n_all; spindles: spindle use)."""
        w = self.w
        n = self.n
        ts = self.targets
        tab: _Tables = {2: {}, 3: {}, 6: {}, 7: {}}
        for dsk in {k[0] for k in keys}:
            tab[2][dsk] = self._disk_column(dsk)
        tab[6][0] = self._plain(6, [float(w.n_pri[t] + w.n_sec[t] + 1) for t in ts])
        for su in {k[1] for k in keys}:
            tab[7][su] = self._spindle_column(su)
        for res in {k[2] for k in keys}:
            col: list[tuple[float, float, float] | None] = []
            for t in ts:
                r_lo = max(w.r_mem[t], res)
                r_hi = w.c_free[t]
                if r_lo > r_hi:
                    col.append(None)
                    continue
                old = w.vals[t][3]
                (l1, l2), (h1, h2) = self._range_part((old, r_lo / w.t_mem[t], r_hi / w.t_mem[t]))
                sq = max(l1 * l1, h1 * h1)
                scalar = _W_RTOTAL * (r_lo / w.t_mem[t] - old)
                col.append((l2 / n - 2.0 * sq / (n * n), h2 / n, scalar))
            tab[3][res] = col
        return tab

    def _plain(self, m: int, news: list[float]) -> list[tuple[float, float, float] | None]:
        lows, highs = self._column(m, news)
        return [(low, high, 0.0) for low, high in zip(lows, highs, strict=True)]

    def _disk_column(self, dsk: int) -> list[tuple[float, float, float] | None]:
        w = self.w
        return self._plain(
            2,
            [1.0 if w.t_dsk[t] == 0 else (w.f_dsk[t] - dsk) / w.t_dsk[t] for t in self.targets],
        )

    def _spindle_column(self, su: int) -> list[tuple[float, float, float] | None]:
        w = self.w
        return self._plain(
            7,
            [(w.ispind[t] + su) / w.sden[t] if w.sden[t] else math.nan for t in self.targets],
        )

    def _pri_tables(self, keys: set[tuple[int, ...]]) -> _Tables:
        """Per metric and figure, per target: (low, high, 0) of the target taking
        the primary and its copy (p_mem: running memory; p_mem_forth: memory;
        p_dsk: disk; p_cpu: vCPUs; n_pri; n_all; spindles: spindle use). Its
        scalar is 0: a target that passes the memory rule keeps N+1 and its
        reservation."""
        w = self.w
        ts = self.targets
        tab: _Tables = {m: {} for m in (0, 1, 2, 4, 5, 6, 7)}
        for run in {k[0] for k in keys}:
            tab[0][run] = self._plain(0, [(w.f_mem[t] - run) / w.t_mem[t] for t in ts])
        for mem in {k[0] + k[1] for k in keys}:
            tab[1][mem] = self._plain(
                1, [(w.f_mem[t] - w.stopped[t] - mem) / w.t_mem[t] for t in ts]
            )
        for dsk in {k[2] for k in keys}:
            tab[2][dsk] = self._disk_column(dsk)
        for cpu in {k[3] for k in keys}:
            tab[4][cpu] = self._plain(
                4, [(w.used_cpus[t] + cpu) / w.t_cpu[t] / w.speed[t] for t in ts]
            )
        tab[5][0] = self._plain(5, [float(w.n_pri[t] + 1) for t in ts])
        tab[6][0] = self._plain(6, [float(w.n_pri[t] + w.n_sec[t] + 1) for t in ts])
        for su in {k[4] for k in keys}:
            tab[7][su] = self._spindle_column(su)
        return tab

    @staticmethod
    def _ranges(tables: _Tables) -> list[tuple[float, float]]:
        """Per metric, the lowest low and the highest high over every entry (and 0)."""
        lo = [0.0] * _NM
        hi = [0.0] * _NM
        for m, entries in tables.items():
            for col in entries.values():
                for e in col:
                    if e is not None:
                        low, high, _ = e
                        if low < lo[m]:
                            lo[m] = low
                        if high > hi[m]:
                            hi[m] = high
        return list(zip(lo, hi, strict=True))

    @staticmethod
    def _apply(
        tables: _Tables, slopes: list[tuple[float, float]]
    ) -> dict[int, dict[int, list[float | None]]]:
        """Per metric and figure, per target: scalar + the weighted h of its low
        (NaN: -inf, the bound is void; None: the target cannot take it)."""
        out: dict[int, dict[int, list[float | None]]] = {}
        inf = math.inf
        for m, entries in tables.items():
            k_neg, k_pos = slopes[m]
            per: dict[int, list[float | None]] = {}
            for fig, col in entries.items():
                hs: list[float | None] = []
                for e in col:
                    if e is None:
                        hs.append(None)
                        continue
                    low, _, scalar = e
                    v = scalar + low * (k_neg if low < 0.0 else k_pos)
                    hs.append(v if v == v else -inf)
                per[fig] = hs
            out[m] = per
        return out

    def _sec_list(
        self, key: tuple[int, ...], hs: dict[int, dict[int, list[float | None]]]
    ) -> list[tuple[float, int]]:
        dsk, su, res = key
        f_dsk = self.w.f_dsk
        out = [
            (a + b + c + d, t)
            for t, a, b, c, d in zip(
                self.targets, hs[2][dsk], hs[3][res], hs[6][0], hs[7][su], strict=True
            )
            if b is not None
            and a is not None
            and c is not None
            and d is not None
            and f_dsk[t] >= dsk
        ]
        out.sort()
        return out

    def _pri_list(
        self, key: tuple[int, ...], hs: dict[int, dict[int, list[float | None]]]
    ) -> list[tuple[float, int]]:
        run, stop, dsk, cpu, su, all_vcpus, excl_id = key
        mem = run + stop
        w = self.w
        excl = next(e for e, k in self.search.excl_ids.items() if k == excl_id) if excl_id else ()
        out: list[tuple[float, int]] = []
        for (t, f_dsk, c_free, r_mem, all_v, limit), a, b, c, d, e, f, g in zip(
            self.pri_rules,
            hs[0][run],
            hs[1][mem],
            hs[2][dsk],
            hs[4][cpu],
            hs[5][0],
            hs[6][0],
            hs[7][su],
            strict=True,
        ):
            if f_dsk < dsk or c_free - mem < r_mem or all_v + all_vcpus > limit:
                continue
            assert a is not None and b is not None and c is not None and d is not None
            assert e is not None and f is not None and g is not None
            if excl:
                # the exclusion tags it already has (tags_delta's target part)
                tags = w.ptags[t]
                lb = _W_TAGS * sum(1 for x in excl if tags[x] >= 1)
                out.append((lb + a + b + c + d + e + f + g, t))
            else:
                out.append((a + b + c + d + e + f + g, t))
        out.sort()
        return out

    # ---------------------------------------------------------------- slopes

    def _slopes(
        self,
        owns: list[tuple[list[float], list[float], float]],
        others: list[tuple[float, float]],
    ) -> list[tuple[float, float]]:
        """Per metric (k_neg, k_pos), each times the metric's weight; `others`:
        per metric the other side's lowest low and highest high."""
        out: list[tuple[float, float]] = []
        std = self.search.stats.std
        if owns:
            mins = list(map(min, zip(*[v[0] for v in owns], strict=True)))
            maxs = list(map(max, zip(*[v[1] for v in owns], strict=True)))
        for m in range(_NM):
            sd = std[m]
            if sd <= 0.0 or not owns:
                out.append((0.0, 0.0))
                continue
            var = sd * sd
            y_min = mins[m] + min(others[m][0], 0.0)
            y_max = maxs[m] + max(others[m][1], 0.0)
            k_neg = 1.0 / (math.sqrt(max(var + y_min, 0.0)) + sd) if y_min < 0 else 0.5 / sd
            k_pos = 1.0 / (math.sqrt(var + y_max) + sd) if y_max > 0 else 0.5 / sd
            out.append((_M_WEIGHT[m] * k_neg, _M_WEIGHT[m] * k_pos))
        return out

    @staticmethod
    def _lb(v: tuple[list[float], list[float], float], slopes: list[tuple[float, float]]) -> float:
        lows, _, scalar = v
        out = sum(
            [
                a * (k_neg if a < 0.0 else k_pos)
                for a, (k_neg, k_pos) in zip(lows, slopes, strict=True)
            ],
            scalar,
        )
        return out if out == out else -math.inf

    def own_bound(
        self, v: tuple[list[float], list[float], float], others: list[tuple[float, float]]
    ) -> float:
        """An own side's bound, with slopes of its own: per metric, over the
        range of y its candidates can have (its a plus the family's targets'
        lowest low or highest high, as in `_slopes`). Its range is within the
        family's, so its h is at least the family's h the targets are bounded
        with, and h_own(a + b) >= h_own(a) + h_own(b) >= h_own(a) + h_family(b).
        At least the family-slope bound of `order`."""
        lows, highs, scalar = v
        out = scalar
        sqrt = math.sqrt
        for a, high, sd, var, weight, (o_lo, o_hi) in zip(
            lows, highs, self.std, self.var, _M_WEIGHT, others, strict=True
        ):
            if sd <= 0.0:
                out += a * 0.0
            elif a < 0.0:
                y_min = a + min(o_lo, 0.0)
                out += a * (weight / (sqrt(max(var + y_min, 0.0)) + sd))
            else:
                y_max = high + max(o_hi, 0.0)
                out += a * (weight / (sqrt(var + y_max) + sd) if y_max > 0 else weight * 0.5 / sd)
        return out if out == out else -math.inf


# One own side's entry of `_Bounds.order`.
_Entry = tuple[
    float,
    float,
    MoveKind,
    _Own,
    list[tuple[float, int]],
    tuple[list[float], list[float], float] | None,
    list[tuple[float, float]],
]

_Tables = dict[int, dict[int, list[tuple[float, float, float] | None]]]

# An own side's parts that do not depend on the current means: per metric the
# low's and the high's constant term and their common slope in the metric's mean,
# the p_rem range (added at the current mean) and the scalar.
_Coef = tuple[list[float], list[float], list[float], tuple[float, float, float] | None, float]


def _coef(side: _CSide, n: float) -> _Coef:
    """`_Bounds._vec`'s low and high of a side are linear in the metric's mean c:
    low = q/n - 2 c d1/n - 2 sq/n^2, high = q/n - 2 c d1/n (sq: the largest square
    of d1 over the p_rem range), plus the range's part of d2 for p_rem."""
    d1s, qs, rng, scalar = side
    base_lo: list[float] = []
    base_hi: list[float] = []
    slope: list[float] = []
    for m in range(_NM):
        d1 = d1s[m]
        sq = d1 * d1
        if m == 3 and rng is not None:
            old, lo, hi = rng
            l1 = d1 + (lo - old)
            h1 = d1 + (hi - old)
            sq = max(l1 * l1, h1 * h1)
        base_lo.append(qs[m] / n - 2.0 * sq / (n * n))
        base_hi.append(qs[m] / n)
        slope.append(-2.0 * d1 / n)
    return base_lo, base_hi, slope, rng, scalar


def _range_part(
    rng: tuple[float, float, float], c: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """((d1 low, d2 low), (d1 high, d2 high)) of a p_rem value anywhere in
    [low, high] instead of `old`, deviations taken from c."""
    old, lo, hi = rng
    base = (old - c) * (old - c)
    mid = min(max(c, lo), hi)
    f_lo = (lo - c) * (lo - c) - base
    f_hi = (hi - c) * (hi - c) - base
    f_mid = (mid - c) * (mid - c) - base
    return (lo - old, f_mid), (hi - old, max(f_lo, f_hi))


def _pick(cands: list[_Cand], names: list[str], insts: list[_Inst]) -> _Cand:
    """Among near-equal gains: least data copied, fewest migrations, then names."""
    return min(
        cands,
        key=lambda c: (
            c.data,
            c.migrations,
            _KIND_ORDER[c.kind],
            insts[c.inst].name,
            names[c.new_p],
            names[c.new_s],
        ),
    )


# --------------------------------------------------------------------------- checks


def _valid_sequence(
    *, cluster: BCluster, avoid: frozenset[str], moves: list[tuple[int, int, int]]
) -> bool:
    """Whether `moves` (instance index, new primary, new secondary) can be carried
    out in order, each keeping the rules; used by the folding pass."""
    work = _Work(cluster, avoid)
    for i, new_p, new_s in moves:
        if _check_move(work, i, new_p, new_s) is None:
            return False
        work.apply(i, new_p, new_s)
    return True


def _check_move(work: _Work, i: int, new_p: int, new_s: int) -> MoveKind | None:
    """The kind of a single move from the instance's placement to (new_p, new_s)
    if one exists and it keeps every rule, else None."""
    p, s = work.p[i], work.s[i]
    if new_p == new_s:
        return None
    if (new_p, new_s) == (s, p):
        kind = MoveKind.FAILOVER
    elif new_p == p and new_s != s:
        kind = MoveKind.REPLACE_SECONDARY
    elif new_p == s and new_s != p:
        kind = MoveKind.FAILOVER_AND_REPLACE
    elif new_s == p and new_p != s:
        kind = MoveKind.REPLACE_AND_FAILOVER
    elif new_s == s and new_p != p:
        kind = MoveKind.REPLACE_PRIMARY
    else:
        return None
    inst = work.insts[i]
    mem, res, dsk = inst.mem, inst.res, inst.dsk
    w = work
    gains_pri = new_p != p
    holders_new = {new_p, new_s} - {p, s}
    for k in holders_new:
        if not w.usable[k] or w.f_dsk[k] < dsk:
            return None
    if gains_pri:
        if not w.usable[new_p]:
            return None
        if w.c_free[new_p] < mem or w.all_vcpus[new_p] + inst.all_vcpus > w.vcpu_limit[new_p]:
            return None
    if {new_p, new_s} != {p, s} and w.has_locs and w.locs[new_p] & w.locs[new_s]:
        return None
    # corral's replace checks: the replace's primary keeps N+1 with the instance.
    if (
        kind in (MoveKind.REPLACE_SECONDARY, MoveKind.REPLACE_AND_FAILOVER)
        and w.online[p]
        and w.r_mem[p] > w.c_free[p]
    ):
        return None
    if kind is MoveKind.REPLACE_PRIMARY:
        if not w.usable[s] or w.all_vcpus[s] + inst.all_vcpus > w.vcpu_limit[s]:
            return None
        if w.new_r(s, p, res, -1, 0) > w.c_free[s] - mem:
            return None
        if max(w.r_mem[new_p], w.rows[new_p].get(s, 0) + res) > w.c_free[new_p]:
            return None
    # every node that takes something keeps N+1 afterwards
    trial = _Trial(w, i, new_p, new_s)
    return kind if trial.ok else None


class _Trial:
    """Applies a move to copies of the touched nodes' constraint figures."""

    def __init__(self, w: _Work, i: int, new_p: int, new_s: int) -> None:
        inst = w.insts[i]
        p, s = w.p[i], w.s[i]
        touched = {p, s, new_p, new_s}
        c_free = {k: w.c_free[k] for k in touched}
        rows = {k: dict(w.rows[k]) for k in touched}
        c_free[p] += inst.mem
        c_free[new_p] -= inst.mem
        rows[s][p] = rows[s].get(p, 0) - inst.res
        rows[new_s][new_p] = rows[new_s].get(new_p, 0) + inst.res
        gainers = (
            {new_p, new_s}
            - ({p} if new_p == p else set())
            - ({s} if (new_s == s and new_p == p) else set())
        )
        if new_s == s and new_p != p:
            gainers.add(s)  # its reservation moves to another peer
        self.ok = all(
            not w.online[k] or max(rows[k].values(), default=0) <= c_free[k] for k in gainers
        )


# --------------------------------------------------------------------------- plan


def plan_balance(
    *,
    cluster: BCluster,
    max_moves: int = 1000,
    min_gain: float = DEFAULT_MIN_GAIN,
    min_gain_limit: float = DEFAULT_MIN_GAIN_LIMIT,
    cost_tolerance: float = DEFAULT_COST_TOLERANCE,
    avoid: frozenset[str] = frozenset(),
    fold_repeats: bool = True,
) -> BalancePlan:
    """Plan moves, best first, until no move gains enough or `max_moves` are
    planned. `avoid`: nodes that must take nothing (e.g. unhealthy ones)."""
    if max_moves < 0:
        raise ValueError("max_moves must not be negative")
    work = _Work(cluster, avoid)
    search = _Search(work)
    before = score(cluster).total
    current = work.total()
    chosen: list[tuple[int, int, int, MoveKind]] = []
    stopped_by = "max moves reached"
    while len(chosen) < max_moves:
        cands = search.best(tolerance=cost_tolerance)
        if not cands:
            stopped_by = "no move lowers the score"
            break
        gain = -cands[0].delta
        if current <= min_gain_limit and gain < min_gain:
            stopped_by = f"best gain {gain:.6f} below --min-gain {min_gain}"
            break
        pick = _pick(cands, work.names, work.insts)
        work.apply(pick.inst, pick.new_p, pick.new_s)
        current = work.total()
        chosen.append((pick.inst, pick.new_p, pick.new_s, pick.kind))
    seq = [(i, np_, ns) for i, np_, ns, _ in chosen]
    if fold_repeats:
        seq = _fold(cluster=cluster, avoid=avoid, moves=seq)
    return _build(
        cluster=cluster,
        avoid=avoid,
        moves=seq,
        before=before,
        scored=search.scored,
        stopped_by=stopped_by,
    )


def _fold(
    *, cluster: BCluster, avoid: frozenset[str], moves: list[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """Replace an instance's repeated moves by one move to where it ends up (at
    the place of its first or its last move), when that is a single move kind and
    the whole sequence stays within the rules; drop moves that end where they
    started."""
    seq = list(moves)
    changed = True
    while changed:
        changed = False
        counts = Counter(i for i, _, _ in seq)
        for i in sorted(k for k, c in counts.items() if c > 1):
            positions = [n for n, mv in enumerate(seq) if mv[0] == i]
            last = seq[positions[-1]]
            rest = [mv for n, mv in enumerate(seq) if n not in positions]
            options: list[list[tuple[int, int, int]]] = []
            start = _placement_at(cluster, i)
            if (last[1], last[2]) == start:
                options.append(rest)
            else:
                for where in (positions[0], positions[-1] - len(positions) + 1):
                    options.append([*rest[:where], last, *rest[where:]])
            for option in options:
                if _valid_sequence(cluster=cluster, avoid=avoid, moves=option):
                    seq = option
                    changed = True
                    break
            if changed:
                break
    return seq


def _placement_at(cluster: BCluster, i: int) -> tuple[int, int]:
    inst = cluster.instances[i]
    names = [n.name for n in cluster.nodes]
    return names.index(inst.pnode), names.index(inst.snode) if inst.snode else -1


def _build(
    *,
    cluster: BCluster,
    avoid: frozenset[str],
    moves: list[tuple[int, int, int]],
    before: float,
    scored: int,
    stopped_by: str,
) -> BalancePlan:
    work = _Work(cluster, avoid)
    out: list[Move] = []
    for i, new_p, new_s in moves:
        kind = _check_move(work, i, new_p, new_s)
        if kind is None:  # pragma: no cover - the search only keeps valid moves
            raise AssertionError(f"planned move of {work.insts[i].name} breaks a rule")
        old_p, old_s = work.p[i], work.s[i]
        work.apply(i, new_p, new_s)
        inst = work.insts[i]
        out.append(
            Move(
                instance=inst.name,
                kind=kind,
                old_primary=work.names[old_p],
                old_secondary=work.names[old_s],
                new_primary=work.names[new_p],
                new_secondary=work.names[new_s],
                data_mib=0 if kind is MoveKind.FAILOVER else inst.dsk,
                migrations=_MIGRATIONS[kind],
                score_after=work.total(),
            )
        )
    after = _cluster_after(cluster, work)
    final = score(after).total
    if out:
        out[-1] = replace(out[-1], score_after=final)
    return BalancePlan(
        moves=tuple(out),
        score_before=before,
        score_after=final,
        data_mib=sum(m.data_mib for m in out),
        migrations=sum(m.migrations for m in out),
        n1_failures_before=n1_failures(cluster),
        n1_failures_after=n1_failures(after),
        cluster_after=after,
        candidates_scored=scored,
        stopped_by=stopped_by,
    )


def _cluster_after(cluster: BCluster, work: _Work) -> BCluster:
    nodes: list[BNode] = [
        replace(n, f_mem=work.f_mem[k], f_dsk=work.f_dsk[k]) for k, n in enumerate(cluster.nodes)
    ]
    instances: list[BInstance] = []
    for i, inst in enumerate(cluster.instances):
        if work.movable[i]:
            inst = replace(inst, pnode=work.names[work.p[i]], snode=work.names[work.s[i]])
        instances.append(inst)
    return replace(cluster, nodes=tuple(nodes), instances=tuple(instances))
