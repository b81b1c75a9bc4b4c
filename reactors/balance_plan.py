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
them out (memory, disk, vCPU ratio, N+1, failure domains) are never scored. Among
moves whose gains are within `cost_tolerance` (relative) of the best, the one that
copies the least data, then migrates the fewest times, wins. A final pass folds
repeated moves of one instance into one where the rules allow, so the plan ends in
the same placement with fewer moves and less data copied.

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
        self.memo: dict[tuple[int, ...], tuple[tuple[tuple[int, float], ...], float]] = {}

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
        st = self.stats
        n = st.n
        out = 0.0
        for m in range(_NM):
            d1 = acc[2 * m]
            d2 = acc[2 * m + 1]
            if d1 == 0.0 and d2 == 0.0:
                continue
            std = st.std[m]
            var = (std * std * n + d2) / n - (d1 / n) * (d1 / n)
            out += _M_WEIGHT[m] * ((math.sqrt(var) if var > 0.0 else 0.0) - std)
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
        """Every candidate within `tolerance` of the best gain (the best first)."""
        w = self.w
        self.stats = _stats(w)
        self.memo = {}
        best_delta = -_EPS
        pool: list[_Cand] = []
        n_nodes = len(w.names)
        targets = [k for k in range(n_nodes) if w.usable[k]]
        domains = w.has_locs
        for i, inst in enumerate(w.insts):
            if not w.movable[i]:
                continue
            p, s = w.p[i], w.s[i]
            mem, res, dsk = inst.mem, inst.res, inst.dsk
            # --- own sides, shared by every target
            # s becomes primary (failover, failover-and-replace)
            s_can_pri = (
                w.usable[s]
                and w.c_free[s] >= mem
                and w.all_vcpus[s] + inst.all_vcpus <= w.vcpu_limit[s]
            )
            tags_ps = self.tags_delta(inst, p, s)
            # p as the primary of a replace keeps N+1 (corral's replace check)
            p_n1_ok = not w.online[p] or w.r_mem[p] <= w.c_free[p]
            # ---------------- failover
            if s_can_pri:
                r_s = w.new_r(s, p, res, -1, 0)
                r_p = w.new_r(p, -1, 0, s, res)
                if r_s <= w.c_free[s] - mem and self._ok_gain(p, r_p, w.c_free[p] + mem):
                    acc = [0.0] * (2 * _NM)
                    sc = self.node_delta(
                        p,
                        inst.run_mem,
                        -inst.stop_mem,
                        0,
                        -inst.vcpus,
                        0,
                        -1,
                        1,
                        r_p,
                        acc,
                    )
                    sc += self.node_delta(
                        s,
                        -inst.run_mem,
                        inst.stop_mem,
                        0,
                        inst.vcpus,
                        0,
                        1,
                        -1,
                        r_s,
                        acc,
                    )
                    d = sc + self.combine(acc) + tags_ps + self.loc_delta(p, s, s, p)
                    self.scored += 1
                    if d < best_delta * (1 - tolerance) + 0.0:
                        best_delta = self._push(
                            pool, _Cand(d, 0, 1, MoveKind.FAILOVER, i, s, p), best_delta, tolerance
                        )
            # precomputed own-side deltas for the target moves
            # (a) s loses its copy (replace-secondary, replace-and-failover)
            acc_ls = [0.0] * (2 * _NM)
            r_s_ls = w.new_r(s, p, res, -1, 0)
            sc_ls = self.node_delta(s, 0, 0, dsk, 0, -inst.su, 0, -1, r_s_ls, acc_ls)
            # (b) p loses its copy, s becomes primary (failover-and-replace)
            acc_fr = [0.0] * (2 * _NM)
            sc_fr = 0.0
            if s_can_pri:
                r_s_fr = w.new_r(s, p, res, -1, 0)
                if r_s_fr <= w.c_free[s] - mem:
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
                        s,
                        -inst.run_mem,
                        inst.stop_mem,
                        0,
                        inst.vcpus,
                        0,
                        1,
                        -1,
                        r_s_fr,
                        acc_fr,
                    )
                    sc_fr += tags_ps
                else:
                    acc_fr = []
            else:
                acc_fr = []
            # (c) p loses its copy (replace-primary)
            acc_lp = [0.0] * (2 * _NM)
            sc_lp = self.node_delta(
                p,
                inst.run_mem,
                -inst.stop_mem,
                dsk,
                -inst.vcpus,
                -inst.su,
                -1,
                0,
                w.r_mem[p],
                acc_lp,
            )
            # replace-primary's temporary primary on s has the memory and, as the
            # primary of the replace, keeps N+1 without this instance's reservation
            rp_ok = s_can_pri and w.new_r(s, p, res, -1, 0) <= w.c_free[s] - mem
            for t in targets:
                if t in (p, s):
                    continue
                t_dsk_ok = w.f_dsk[t] >= dsk
                if not t_dsk_ok:
                    continue
                row_t = w.rows[t]
                free_t = w.c_free[t]
                r_t = w.r_mem[t]
                # ---------------- replace-secondary: (p, t)
                if p_n1_ok and not (domains and w.locs[p] & w.locs[t]):
                    r_new = max(r_t, row_t.get(p, 0) + res)
                    if r_new <= free_t:
                        acc = acc_ls.copy()
                        sc = sc_ls + self.node_delta(t, 0, 0, -dsk, 0, inst.su, 0, 1, r_new, acc)
                        d = sc + self.combine(acc) + self.loc_delta(p, s, p, t)
                        self.scored += 1
                        if d < best_delta * (1 - tolerance):
                            best_delta = self._push(
                                pool,
                                _Cand(d, dsk, 0, MoveKind.REPLACE_SECONDARY, i, p, t),
                                best_delta,
                                tolerance,
                            )
                # ---------------- failover-and-replace: (s, t)
                if acc_fr and not (domains and w.locs[s] & w.locs[t]):
                    r_new = max(r_t, row_t.get(s, 0) + res)
                    if r_new <= free_t:
                        acc = acc_fr.copy()
                        sc = sc_fr + self.node_delta(t, 0, 0, -dsk, 0, inst.su, 0, 1, r_new, acc)
                        d = sc + self.combine(acc) + self.loc_delta(p, s, s, t)
                        self.scored += 1
                        if d < best_delta * (1 - tolerance):
                            best_delta = self._push(
                                pool,
                                _Cand(d, dsk, 1, MoveKind.FAILOVER_AND_REPLACE, i, s, t),
                                best_delta,
                                tolerance,
                            )
                # t becomes primary: memory, vCPU ratio, its own N+1
                if free_t - mem < r_t or w.all_vcpus[t] + inst.all_vcpus > w.vcpu_limit[t]:
                    continue
                tags_pt = self.tags_delta(inst, p, t)
                # ---------------- replace-and-failover: (t, p)
                if p_n1_ok and not (domains and w.locs[p] & w.locs[t]):
                    r_p = w.new_r(p, -1, 0, t, res)
                    if not w.online[p] or r_p <= w.c_free[p] + mem:
                        acc = acc_ls.copy()
                        sc = sc_ls + self.node_delta(
                            p,
                            inst.run_mem,
                            -inst.stop_mem,
                            0,
                            -inst.vcpus,
                            0,
                            -1,
                            1,
                            r_p,
                            acc,
                        )
                        sc += self.node_delta(
                            t,
                            -inst.run_mem,
                            inst.stop_mem,
                            -dsk,
                            inst.vcpus,
                            inst.su,
                            1,
                            0,
                            r_t,
                            acc,
                        )
                        d = sc + self.combine(acc) + tags_pt + self.loc_delta(p, s, t, p)
                        self.scored += 1
                        if d < best_delta * (1 - tolerance):
                            best_delta = self._push(
                                pool,
                                _Cand(d, dsk, 1, MoveKind.REPLACE_AND_FAILOVER, i, t, p),
                                best_delta,
                                tolerance,
                            )
                # ---------------- replace-primary: (t, s)
                if rp_ok and not (domains and w.locs[s] & w.locs[t]):
                    # the replace's new secondary t takes s as its peer
                    if max(r_t, row_t.get(s, 0) + res) > free_t:
                        continue
                    r_s = w.new_r(s, p, res, t, res)
                    if w.online[s] and r_s > w.c_free[s]:
                        continue
                    acc = acc_lp.copy()
                    sc = sc_lp + self.node_delta(s, 0, 0, 0, 0, 0, 0, 0, r_s, acc)
                    sc += self.node_delta(
                        t,
                        -inst.run_mem,
                        inst.stop_mem,
                        -dsk,
                        inst.vcpus,
                        inst.su,
                        1,
                        0,
                        r_t,
                        acc,
                    )
                    d = sc + self.combine(acc) + tags_pt + self.loc_delta(p, s, t, s)
                    self.scored += 1
                    if d < best_delta * (1 - tolerance):
                        best_delta = self._push(
                            pool,
                            _Cand(d, dsk, 2, MoveKind.REPLACE_PRIMARY, i, t, s),
                            best_delta,
                            tolerance,
                        )
        limit = best_delta * (1 - tolerance)
        return sorted(
            (c for c in pool if c.delta <= limit + 1e-12),
            key=lambda c: c.delta,
        )

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
