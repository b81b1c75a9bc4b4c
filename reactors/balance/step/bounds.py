"""Lower bounds of candidate deltas, ranked at each step: per own side a bound
from its mean-independent parts (`reactors.balance.step.sides`) at the step's means and
deviations, per target node a bound tabulated by node, metric and instance figure,
and the order the search visits own sides and their targets in, best bound first
(`Bounds`). Every bound depends on the step's means, which any move changes, so
all are re-evaluated at every step, as array arithmetic over every own side at
once (the target tables of a family stacked, `reactors.balance.step.arrays.Tables`),
operation for operation the one of bounding each side alone; an own side's
bound with slopes of its own is worked out only for the sides the search
reaches, a block of the visiting order at a time (`Bounds.block`).

Pure: no I/O, no logging, no asyncio; it reads the `Work`, the `Sides` and the
`NodeArrays`, never changes them.
"""

from __future__ import annotations

import math

import numpy as np

from reactors.balance.step.arrays import (
    Bools,
    Floats,
    Ints,
    NodeArrays,
    Table,
    Tables,
    stack_tables,
)
from reactors.balance.step.deltas import Stats
from reactors.balance.step.sides import FAMILY, FO, KEY_MEM, NSLOT, PRI, SEC, Sides
from reactors.balance.work import M_WEIGHT, NM, W_RTOTAL, W_TAGS, Work

# A key's targets, lowest bound first: their bounds and their nodes.
_Targets = tuple[list[float], list[int]]


class Bounds:
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
    narrower range (`_tight`), which only tightens its bound.

    Every bound depends on the step's means and standard deviations, which any
    move changes, so all of them are re-evaluated at every step; what is kept
    from step to step is their mean-independent part (`Sides`), and the
    re-evaluation is array arithmetic over every own side at once, operation for
    operation the one of bounding each side alone (the same floating-point
    results). The target lists of a family are sorted in one go; an own side's
    list is built when it is visited."""

    def __init__(
        self, work: Work, stats: Stats, sides: Sides, arrays: NodeArrays, targets: list[int]
    ) -> None:
        self.w = work
        self.arrays = arrays
        self.sides = sides
        self.targets = targets
        self.t_idx = np.array(targets, dtype=np.int64)
        self.old = arrays.vals[self.t_idx]  # the targets' current values
        self.kids: dict[int, Ints] = {}  # per family, the key ids in use
        self.center = stats.center
        self.n = float(stats.n)
        self.std = stats.std
        self.var = [sd * sd for sd in stats.std]
        self.on = all(math.isfinite(x) for x in stats.center + stats.std)
        # per family (copy-taking, primary-taking), per key (by position): the
        # bounds and nodes of the targets that can take it, lowest first, and
        # how many there are; key id -> position
        self.mats: dict[int, tuple[Floats, Ints, Ints, Ints]] = {}
        self.lists: tuple[dict[int, _Targets], ...] = ({}, {}, {})
        # a failover's bound for its target (it has none)
        self.fo_bound = 0.0 if self.on else -math.inf
        # the rows to visit, best first, and per position in that order: the
        # bound of its best candidate and its targets' lowest bound (its own
        # bound, tightened by `_tight`, is worked out a block at a time: `block`)
        self.rows: list[int] = []
        self.order: Ints = np.zeros(0, dtype=np.int64)
        self.key_at: Floats = np.zeros(0)
        self.first_at: Floats = np.zeros(0)
        # per row: the family-slope bound, a's low and high per metric; per
        # family the other side's lowest low and highest high (at most 0, at
        # least 0) per metric
        self.lb: Floats = np.zeros(0)
        self.lows: Floats = np.zeros((0, NM))
        self.highs: Floats = np.zeros((0, NM))
        self.o_lo: Floats = np.zeros((3, NM))
        self.o_hi: Floats = np.zeros((3, NM))
        with np.errstate(all="ignore"):
            if self.on:
                self._rank()
            else:
                self._void()

    def targets_for(self, fam: int, kid: int) -> _Targets:
        """The targets of the own sides of a copy- or primary-taking family with
        key id `kid`, lowest bound first: their bounds and their nodes."""
        hit = self.lists[fam].get(kid)
        if hit is None:
            if not self.on:
                hit = ([-math.inf] * len(self.targets), self.targets)
            else:
                ranked, targets, count, pos = self.mats[fam]
                j = int(pos[kid])
                n = int(count[j])
                hit = (ranked[j, :n].tolist(), targets[j, :n].tolist())
            self.lists[fam][kid] = hit
        return hit

    def _void(self) -> None:
        """Means or deviations that are not finite: no bound, every side visited
        (in row order), every target tried."""
        self.order = np.flatnonzero(self.sides.valid)
        self.rows = self.order.tolist()
        self.key_at = self.first_at = np.full(self.order.size, -math.inf)

    def block(
        self, start: int, size: int
    ) -> tuple[list[float], list[float], list[float], list[int]]:
        """For the rows at positions [start, start + size) of the visiting
        order: the bound of their best candidate, their own bound, their
        targets' lowest bound and their key id (`targets_for`)."""
        end = min(start + size, self.order.size)
        rows = self.order[start:end]
        keys, firsts = self.key_at[start:end].tolist(), self.first_at[start:end].tolist()
        kids: list[int] = self.sides.key[rows].tolist()
        if not self.on:
            return keys, keys, firsts, kids
        with np.errstate(all="ignore"):
            return keys, self._tight(rows).tolist(), firsts, kids

    def _rank(self) -> None:
        """Every row's bounds at the step's means, and the rows in visiting order."""
        s = self.sides
        lows, highs = self._vecs()
        fam_rows = [np.flatnonzero(s.valid & (s.family == f)) for f in (FO, SEC, PRI)]
        sec = self._sec_tables(fam_rows[SEC])
        pri = self._pri_tables(fam_rows[PRI])
        no_range = [(0.0, 0.0)] * NM
        others = (no_range, sec.ranges(), pri.ranges())
        slopes = self._slopes(lows, highs, fam_rows, others)
        # every row's bound with its family's slopes (rows are instance, then slot)
        k_neg = np.array([[k for k, _ in sl] for sl in slopes])[list(FAMILY)]
        k_pos = np.array([[k for _, k in sl] for sl in slopes])[list(FAMILY)]
        by_slot = lows.reshape(-1, NSLOT, NM)
        terms = (by_slot * np.where(by_slot < 0.0, k_neg, k_pos)).reshape(-1, NM)
        lb = s.scalar.copy()
        for m in range(NM):
            lb = lb + terms[:, m]
        lb[np.isnan(lb)] = -math.inf
        first = np.zeros(lb.size)
        has = np.zeros(lb.size, dtype=np.bool_)
        has[fam_rows[FO]] = True
        for f, tab in ((SEC, sec), (PRI, pri)):
            vals, ok = tab.matrix(slopes[f]), tab.ok
            pos = np.zeros(len(s.keys[f]), dtype=np.int64)
            pos[tab.kids] = np.arange(tab.kids.size)
            # each key's targets that can take it, lowest bound first (then the
            # lowest node: a stable sort of targets in node order)
            masked = np.where(ok, vals, math.inf)
            order = np.argsort(masked, axis=1, kind="stable")
            ranked = np.take_along_axis(masked, order, axis=1)
            count = np.sum(ok, axis=1)
            self.mats[f] = (ranked, self.t_idx[order], count, pos)
            rows = fam_rows[f]
            if rows.size:
                at = pos[s.key[rows]]
                first[rows] = ranked[at, 0] if ranked.shape[1] else math.inf
                has[rows] = (count > 0)[at]
        key = lb + first
        visit = np.flatnonzero(has)
        self.order = visit[np.argsort(key[visit], kind="stable")]
        self.rows = self.order.tolist()
        self.key_at = key[self.order]
        self.first_at = first[self.order]
        self.lb, self.lows, self.highs = lb, lows, highs
        self.o_lo = np.minimum(np.array([[lo for lo, _ in o] for o in others]), 0.0)
        self.o_hi = np.maximum(np.array([[hi for _, hi in o] for o in others]), 0.0)

    def _vecs(self) -> tuple[Floats, Floats]:
        """Per row and metric a's low and high bound at the current means (from
        the side's mean-independent coefficients, see `coef`)."""
        s = self.sides
        n = self.n
        c = np.array(self.center)
        lows = s.base_lo + s.slope * c
        highs = s.base_hi + s.slope * c
        ranged = np.flatnonzero(s.valid & s.has_rng)
        if ranged.size:
            # `range_part` of each row's p_rem range, at the current mean
            c3 = self.center[3]
            old, lo, hi = s.rng[ranged, 0], s.rng[ranged, 1], s.rng[ranged, 2]
            base = (old - c3) * (old - c3)
            mid = np.minimum(np.maximum(c3, lo), hi)
            f_lo = (lo - c3) * (lo - c3) - base
            f_hi = (hi - c3) * (hi - c3) - base
            f_mid = (mid - c3) * (mid - c3) - base
            lows[ranged, 3] += f_mid / n
            highs[ranged, 3] += np.maximum(f_lo, f_hi) / n
        return lows, highs

    def _slopes(
        self,
        lows: Floats,
        highs: Floats,
        fam_rows: list[Ints],
        others: tuple[list[tuple[float, float]], ...],
    ) -> list[list[tuple[float, float]]]:
        """Per family and metric (k_neg, k_pos), each times the metric's weight,
        over the family's rows; `others`: per family and metric the other side's
        lowest low and highest high. A family's lowest low (highest high) is
        taken as Python's min (max) takes it: NaN when its first row's is NaN,
        the NaN-skipping one otherwise."""
        # per slot and metric, over the valid rows (rows are instance, then slot)
        valid = np.repeat(self.sides.valid.reshape(-1, NSLOT), NM, axis=1)
        wide = (-1, NSLOT * NM)
        lo = np.fmin.reduce(lows.reshape(wide), axis=0, where=valid, initial=math.nan)
        hi = np.fmax.reduce(highs.reshape(wide), axis=0, where=valid, initial=math.nan)
        lo, hi = lo.reshape(NSLOT, NM), hi.reshape(NSLOT, NM)
        out: list[list[tuple[float, float]]] = []
        std = self.std
        for fam in (FO, SEC, PRI):
            fr = fam_rows[fam]
            have = fr.size > 0
            if have:
                slots = [k for k, f in enumerate(FAMILY) if f == fam]
                mins = _first_nan(np.fmin.reduce(lo[slots], axis=0), lows[fr[0]])
                maxs = _first_nan(np.fmax.reduce(hi[slots], axis=0), highs[fr[0]])
            per: list[tuple[float, float]] = []
            for m in range(NM):
                sd = std[m]
                if sd <= 0.0 or not have:
                    per.append((0.0, 0.0))
                    continue
                var = sd * sd
                y_min = mins[m] + min(others[fam][m][0], 0.0)
                y_max = maxs[m] + max(others[fam][m][1], 0.0)
                k_neg = 1.0 / (math.sqrt(max(var + y_min, 0.0)) + sd) if y_min < 0 else 0.5 / sd
                k_pos = 1.0 / (math.sqrt(var + y_max) + sd) if y_max > 0 else 0.5 / sd
                per.append((M_WEIGHT[m] * k_neg, M_WEIGHT[m] * k_pos))
            out.append(per)
        return out

    def _tight(self, rows: Ints) -> Floats:
        """The given rows' own bounds with slopes of their own: per metric, over
        the range of y its candidates can have (its a plus the family's
        targets' lowest low or highest high, as in `_slopes`). Its range is
        within the family's, so its h is at least the family's h the targets
        are bounded with, and h_own(a + b) >= h_own(a) + h_own(b) >= h_own(a) +
        h_family(b). At least the family-slope bound (`lb`)."""
        fam = self.sides.family[rows]
        a = self.lows[rows]
        sd = np.array(self.std)
        var = np.array(self.var)
        weight = np.array(M_WEIGHT)
        y_min = a + self.o_lo[fam]
        neg = a * (weight / (np.sqrt(np.maximum(var + y_min, 0.0)) + sd))
        y_max = self.highs[rows] + self.o_hi[fam]
        pos = a * np.where(y_max > 0, weight / (np.sqrt(var + y_max) + sd), weight * 0.5 / sd)
        terms = np.where(a < 0.0, neg, pos)
        for m in range(NM):
            if self.std[m] <= 0.0:
                terms[:, m] = a[:, m] * 0.0
        out = self.sides.scalar[rows]
        for m in range(NM):
            out = out + terms[:, m]
        out[np.isnan(out)] = -math.inf
        return np.maximum(self.lb[rows], out)

    def _figures(self, f: int, rows: Ints, col: int) -> tuple[Ints, Ints, Bools]:
        """A figure of the family's keys: its values, per used key (ascending
        id) its value's position, and which values the used keys have."""
        vals, inv = self.sides.key_figures(f, col)
        at = inv[self.kids[f]]
        used = np.zeros(vals.size, dtype=np.bool_)
        used[at] = True
        return vals, at, used

    def _const(self, m: int, news: Floats, keys: int) -> Table:
        """A table whose one figure every key has (n_pri, n_all)."""
        one = np.ones(1, dtype=np.bool_)
        return Table(m, np.zeros(keys, dtype=np.int64), one, news[None, :])

    def _disk(self, dsk: Ints) -> Floats:
        a, ti = self.arrays, self.t_idx
        t_dsk = a.t_dsk[ti]
        return np.where(t_dsk == 0, 1.0, (a.f_dsk[ti] - dsk[:, None]) / t_dsk)

    def _spindles(self, su: Ints) -> Floats:
        a, ti = self.arrays, self.t_idx
        sden = a.sden[ti]
        return np.where(sden != 0, (a.ispind[ti] + su[:, None]) / sden, math.nan)

    def _sec_tables(self, rows: Ints) -> Tables:
        """Per metric and figure, per target: (low, high, scalar) of the target
        taking a copy (p_dsk: disk; p_rem: reservation, over the range; n_all;
        spindles: spindle use), `none` where it cannot take it; and whether
        each used key's targets can take it (their disk, their reservation's
        range)."""
        a, ti = self.arrays, self.t_idx
        kids = self.kids[SEC] = _used(self.sides, SEC, rows)
        dsk, at_d, used_d = self._figures(SEC, rows, 0)
        su, at_s, used_s = self._figures(SEC, rows, 1)
        res, at_r, used_r = self._figures(SEC, rows, 2)
        cols = [Table(2, at_d, used_d, self._disk(dsk))]
        # p_rem: the reservation anywhere in [max(r_mem, res), c_free]
        r_lo = np.maximum(a.r_mem[ti], res[:, None])
        r_hi = a.c_free[ti]
        t_mem = a.t_mem[ti]
        c3, n = self.center[3], self.n
        old = self.old[:, 3]
        lo, hi = r_lo / t_mem, r_hi / t_mem
        base = (old - c3) * (old - c3)
        mid = np.minimum(np.maximum(c3, lo), hi)
        f_lo = (lo - c3) * (lo - c3) - base
        f_hi = (hi - c3) * (hi - c3) - base
        f_mid = (mid - c3) * (mid - c3) - base
        l1, h1 = lo - old, hi - old
        sq = np.where(h1 * h1 > l1 * l1, h1 * h1, l1 * l1)
        high = np.where(f_hi > f_lo, f_hi, f_lo) / n
        scalar = W_RTOTAL * (lo - old)
        none = r_lo > r_hi
        low = f_mid / n - 2.0 * sq / (n * n)
        cols.append(Table(3, at_r, used_r, None, (low, high, scalar, none)))
        cols.append(self._const(6, (a.n_all[ti] + 1).astype(np.float64), kids.size))
        cols.append(Table(7, at_s, used_s, self._spindles(su)))
        ok = (
            ~none[at_r]
            & (a.f_dsk[ti] >= dsk[at_d][:, None])
            & (a.ispind[ti] + su[at_s][:, None] <= a.spin_cap[ti])
        )
        return stack_tables(kids, cols, None, ok, self.old, self.center, self.n)

    def _pri_tables(self, rows: Ints) -> Tables:
        """Per metric and figure, per target: (low, high, 0) of the target taking
        the primary and its copy (p_mem: running memory; p_mem_forth: memory;
        p_dsk: disk; p_cpu: vCPUs; n_pri; n_all; spindles: spindle use); its
        scalar is 0: a target that passes the memory rule keeps N+1 and its
        reservation. Also per used key and target, the exclusion tags of the
        key's instance the target already has (the target part of
        `tags_delta`), and whether it can take the primary (disk, memory, vCPU
        ratio)."""
        a, ti = self.arrays, self.t_idx
        kids = self.kids[PRI] = _used(self.sides, PRI, rows)
        run, at_run, used_run = self._figures(PRI, rows, 0)
        mem, at_mem, used_mem = self._figures(PRI, rows, KEY_MEM)
        # the memory the target holds for the primary: running, or all of it
        # under reserve_stopped
        hold, at_hold, _ = self._figures(PRI, rows, KEY_MEM if self.w.reserve_stopped else 0)
        dsk, at_d, used_d = self._figures(PRI, rows, 2)
        cpu, at_c, used_c = self._figures(PRI, rows, 3)
        su, at_s, used_s = self._figures(PRI, rows, 4)
        av, at_av, _ = self._figures(PRI, rows, 5)
        f_mem, t_mem = a.f_mem[ti], a.t_mem[ti]
        cpus = (a.used_cpus[ti] + cpu[:, None]) / a.t_cpu[ti] / a.speed[ti]
        cols = [
            Table(0, at_run, used_run, (f_mem - a.over[ti] - run[:, None]) / t_mem),
            Table(1, at_mem, used_mem, (f_mem - a.stopped[ti] - mem[:, None]) / t_mem),
            Table(2, at_d, used_d, self._disk(dsk)),
            Table(4, at_c, used_c, cpus),
            self._const(5, (a.n_pri[ti] + 1).astype(np.float64), kids.size),
            self._const(6, (a.n_all[ti] + 1).astype(np.float64), kids.size),
            Table(7, at_s, used_s, self._spindles(su)),
        ]
        ok = (
            (a.f_dsk[ti] >= dsk[at_d][:, None])
            & (a.ispind[ti] + su[at_s][:, None] <= a.spin_cap[ti])
            & (a.c_free[ti] - hold[at_hold][:, None] >= a.r_mem[ti])
            & (a.all_vcpus[ti] + av[at_av][:, None] <= a.vcpu_limit[ti])
        )
        eids, at_e, _ = self._figures(PRI, rows, 6)
        return stack_tables(
            kids, cols, self._tag_rows(eids)[at_e], ok, self.old, self.center, self.n
        )

    def _tag_rows(self, eids: Ints) -> Floats:
        """Per exclusion-tag set (by id): per target, the tags of the set it
        already has, weighted."""
        w = self.w
        by_id = {k: e for e, k in self.sides.excl_ids.items()}
        rows: list[list[float]] = []
        for eid in eids.tolist():
            excl = by_id[eid] if eid else ()
            rows.append(
                [
                    W_TAGS * sum(1 for x in excl if w.ptags[t][x] >= 1) if excl else 0.0
                    for t in self.targets
                ]
            )
        return np.array(rows, dtype=np.float64).reshape(eids.size, len(self.targets))


def _used(sides: Sides, f: int, rows: Ints) -> Ints:
    """The key ids the family's rows have, ascending."""
    used = np.zeros(len(sides.keys[f]), dtype=np.bool_)
    used[sides.key[rows]] = True
    return np.flatnonzero(used)


def _first_nan(reduced: Floats, first: Floats) -> list[float]:
    """A column's min or max as Python's min/max take it: NaN when its first value
    is NaN, the NaN-skipping reduction otherwise."""
    out = reduced.copy()
    out[np.isnan(first)] = math.nan
    return [float(x) for x in out.tolist()]
