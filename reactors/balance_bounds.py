"""Lower bounds of candidate deltas, ranked at each step: per own side a bound
from its mean-independent parts (`reactors.balance_sides`) at the step's means and
deviations, per target node a bound tabulated by node, metric and instance figure,
and the order the search visits own sides and their targets in, best bound first
(`Bounds`). Every bound depends on the step's means, which any move changes, so
all are re-evaluated at every step, as array arithmetic over every own side at
once, operation for operation the one of bounding each side alone.

Pure: no I/O, no logging, no asyncio; it reads the `Work`, the `Sides` and the
`NodeArrays`, never changes them. Comes after `reactors.balance_sides`,
`reactors.balance_arrays` and `reactors.balance_deltas` (the step's `Stats`);
read by `reactors.balance_search`, which visits candidates in its order and stops
where no bound can reach the best delta found.
"""

from __future__ import annotations

import math

import numpy as np

from reactors.balance_arrays import Bools, Floats, Ints, NodeArrays
from reactors.balance_deltas import Stats
from reactors.balance_sides import FAMILY, FO, NSLOT, PRI, SEC, Sides, range_part
from reactors.balance_work import M_WEIGHT, NM, W_RTOTAL, W_TAGS, Work

_Tables = dict[int, dict[int, list[tuple[float, float, float] | None]]]


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
    narrower range (`_own_bounds`), which only tightens its bound.

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
        self.center = stats.center
        self.n = float(stats.n)
        self.std = stats.std
        self.var = [sd * sd for sd in stats.std]
        self.on = all(math.isfinite(x) for x in stats.center + stats.std)
        # per family (copy-taking, primary-taking), per key (by position): the
        # bounds and nodes of the targets that can take it, lowest first, and
        # how many there are; key id -> position
        self.mats: dict[int, tuple[Floats, Ints, Ints, Ints]] = {}
        self.lists: dict[tuple[int, int], list[tuple[float, int]]] = {}
        # per row: the bound of its best candidate, its own bound (tightened by
        # `_own_bounds`) and its targets' lowest bound; the rows to visit, best first
        self.key: list[float] = []
        self.lb: list[float] = []
        self.first: list[float] = []
        self.rows: list[int] = []
        with np.errstate(all="ignore"):
            if self.on:
                self._rank()
            else:
                self._void()

    def targets_of(self, r: int) -> list[tuple[float, int]]:
        """Row r's targets with their bounds, lowest first (-1: a failover's none)."""
        fam = FAMILY[r % NSLOT]
        if not self.on:
            return [(-math.inf, -1)] if fam == FO else [(-math.inf, t) for t in self.targets]
        if fam == FO:
            return [(0.0, -1)]
        kid = int(self.sides.key[r])
        hit = self.lists.get((fam, kid))
        if hit is None:
            ranked, targets, count, pos = self.mats[fam]
            j = int(pos[kid])
            n = int(count[j])
            hit = list(zip(ranked[j, :n].tolist(), targets[j, :n].tolist(), strict=True))
            self.lists[(fam, kid)] = hit
        return hit

    def _void(self) -> None:
        """Means or deviations that are not finite: no bound, every side visited
        (in row order), every target tried."""
        rows = self.sides.valid.size
        self.key = self.lb = self.first = [-math.inf] * rows
        self.rows = np.flatnonzero(self.sides.valid).tolist()

    def _rank(self) -> None:
        """Every row's bounds at the step's means, and the rows in visiting order."""
        s = self.sides
        lows, highs = self._vecs()
        fam_rows = [np.flatnonzero(s.valid & (s.family == f)) for f in (FO, SEC, PRI)]
        keys = [[s.keys[f][k] for k in np.unique(s.key[fam_rows[f]]).tolist()] for f in (SEC, PRI)]
        sec_tab = self._sec_tables(set(keys[0]))
        pri_tab = self._pri_tables(set(keys[1]))
        no_range = [(0.0, 0.0)] * NM
        others = (no_range, self._ranges(sec_tab), self._ranges(pri_tab))
        slopes = [
            self._slopes(lows[fr], highs[fr], o) for fr, o in zip(fam_rows, others, strict=True)
        ]
        fam = s.family
        k_neg = np.array([[k for k, _ in sl] for sl in slopes])[fam]
        k_pos = np.array([[k for _, k in sl] for sl in slopes])[fam]
        terms = lows * np.where(lows < 0.0, k_neg, k_pos)
        lb = s.scalar.copy()
        for m in range(NM):
            lb = lb + terms[:, m]
        lb[np.isnan(lb)] = -math.inf
        first = np.zeros(lb.size)
        has = np.zeros(lb.size, dtype=np.bool_)
        has[fam_rows[FO]] = True
        for f, tab, fkeys in ((SEC, sec_tab, keys[0]), (PRI, pri_tab, keys[1])):
            hs = self._apply(tab, slopes[f])
            vals, ok = self._sec_matrix(fkeys, hs) if f == SEC else self._pri_matrix(fkeys, hs)
            pos = np.zeros(len(s.keys[f]), dtype=np.int64)
            pos[[s.key_ids[f][k] for k in fkeys]] = np.arange(len(fkeys))
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
        tight = np.maximum(lb, self._own_bounds(lows, highs, others))
        visit = np.flatnonzero(has)
        self.rows = visit[np.argsort(key[visit], kind="stable")].tolist()
        self.key = key.tolist()
        self.lb = tight.tolist()
        self.first = first.tolist()

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
        self, lows: Floats, highs: Floats, others: list[tuple[float, float]]
    ) -> list[tuple[float, float]]:
        """Per metric (k_neg, k_pos), each times the metric's weight, over a
        family's rows; `others`: per metric the other side's lowest low and
        highest high."""
        out: list[tuple[float, float]] = []
        std = self.std
        have = lows.shape[0] > 0
        if have:
            mins = _first_nan(np.fmin.reduce(lows, axis=0), lows[0])
            maxs = _first_nan(np.fmax.reduce(highs, axis=0), highs[0])
        for m in range(NM):
            sd = std[m]
            if sd <= 0.0 or not have:
                out.append((0.0, 0.0))
                continue
            var = sd * sd
            y_min = mins[m] + min(others[m][0], 0.0)
            y_max = maxs[m] + max(others[m][1], 0.0)
            k_neg = 1.0 / (math.sqrt(max(var + y_min, 0.0)) + sd) if y_min < 0 else 0.5 / sd
            k_pos = 1.0 / (math.sqrt(var + y_max) + sd) if y_max > 0 else 0.5 / sd
            out.append((M_WEIGHT[m] * k_neg, M_WEIGHT[m] * k_pos))
        return out

    def _own_bounds(
        self, lows: Floats, highs: Floats, others: tuple[list[tuple[float, float]], ...]
    ) -> Floats:
        """Every row's own bound with slopes of its own: per metric, over the
        range of y its candidates can have (its a plus the family's targets'
        lowest low or highest high, as in `_slopes`). Its range is within the
        family's, so its h is at least the family's h the targets are bounded
        with, and h_own(a + b) >= h_own(a) + h_own(b) >= h_own(a) + h_family(b).
        At least the family-slope bound."""
        fam = self.sides.family
        o_lo = np.minimum(np.array([[lo for lo, _ in o] for o in others]), 0.0)[fam]
        o_hi = np.maximum(np.array([[hi for _, hi in o] for o in others]), 0.0)[fam]
        out = self.sides.scalar.copy()
        for m in range(NM):
            a = lows[:, m]
            sd = self.std[m]
            if sd <= 0.0:
                out = out + a * 0.0
                continue
            var = self.var[m]
            weight = M_WEIGHT[m]
            y_min = a + o_lo[:, m]
            neg = a * (weight / (np.sqrt(np.maximum(var + y_min, 0.0)) + sd))
            y_max = highs[:, m] + o_hi[:, m]
            pos = a * np.where(y_max > 0, weight / (np.sqrt(var + y_max) + sd), weight * 0.5 / sd)
            out = out + np.where(a < 0.0, neg, pos)
        out[np.isnan(out)] = -math.inf
        return out

    def _range_part(
        self, rng: tuple[float, float, float]
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """((d1 low, d2 low), (d1 high, d2 high)) of a p_rem value anywhere in
        [low, high] instead of `old`."""
        return range_part(rng, self.center[3])

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
                scalar = W_RTOTAL * (r_lo / w.t_mem[t] - old)
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
        lo = [0.0] * NM
        hi = [0.0] * NM
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

    def _sec_matrix(
        self, keys: list[tuple[int, ...]], hs: dict[int, dict[int, list[float | None]]]
    ) -> tuple[Floats, Bools]:
        """Per copy-taking key (dsk, su, res) and target: the target's bound and
        whether it can take the copy (its disk, its reservation's range)."""
        if not keys:
            return np.zeros((0, len(self.targets))), np.zeros((0, len(self.targets)), np.bool_)
        a, no_a = _gather(hs[2], [k[0] for k in keys])
        b, no_b = _gather(hs[3], [k[2] for k in keys])
        c, no_c = _gather(hs[6], [0] * len(keys))
        d, no_d = _gather(hs[7], [k[1] for k in keys])
        dsk = np.array([k[0] for k in keys], dtype=np.int64)
        f_dsk = self.arrays.f_dsk[self.t_idx]
        ok = ~(no_a | no_b | no_c | no_d) & (f_dsk >= dsk[:, None])
        return a + b + c + d, ok

    def _pri_matrix(
        self, keys: list[tuple[int, ...]], hs: dict[int, dict[int, list[float | None]]]
    ) -> tuple[Floats, Bools]:
        """Per primary-taking key (run, stop, dsk, cpu, su, all_vcpus, excl_id)
        and target: the target's bound (the exclusion tags it already has first)
        and whether it can take the primary (disk, memory, vCPU ratio)."""
        if not keys:
            return np.zeros((0, len(self.targets))), np.zeros((0, len(self.targets)), np.bool_)
        out = self._tag_rows([k[6] for k in keys])
        zeros = [0] * len(keys)
        for m, figs in (
            (0, [k[0] for k in keys]),
            (1, [k[0] + k[1] for k in keys]),
            (2, [k[2] for k in keys]),
            (4, [k[3] for k in keys]),
            (5, zeros),
            (6, zeros),
            (7, [k[4] for k in keys]),
        ):
            out = out + _gather(hs[m], figs)[0]
        dsk = np.array([k[2] for k in keys], dtype=np.int64)[:, None]
        mem = np.array([k[0] + k[1] for k in keys], dtype=np.int64)[:, None]
        all_vcpus = np.array([k[5] for k in keys], dtype=np.int64)[:, None]
        a = self.arrays
        ti = self.t_idx
        ok = (
            (a.f_dsk[ti] >= dsk)
            & (a.c_free[ti] - mem >= a.r_mem[ti])
            & (a.all_vcpus[ti] + all_vcpus <= a.vcpu_limit[ti])
        )
        return out, ok

    def _tag_rows(self, excl_ids: list[int]) -> Floats:
        """Per key: per target, the exclusion tags of the key's instance it
        already has (the target part of `tags_delta`), weighted."""
        w = self.w
        by_id = {k: e for e, k in self.sides.excl_ids.items()}
        rows: dict[int, list[float]] = {}
        for eid in set(excl_ids):
            excl = by_id[eid] if eid else ()
            rows[eid] = [
                W_TAGS * sum(1 for x in excl if w.ptags[t][x] >= 1) if excl else 0.0
                for t in self.targets
            ]
        return np.array([rows[eid] for eid in excl_ids], dtype=np.float64).reshape(
            len(excl_ids), len(self.targets)
        )


def _gather(col: dict[int, list[float | None]], figs: list[int]) -> tuple[Floats, Bools]:
    """Rows of a table column (per figure, per target) for the given figures,
    as values and where the entry is None (the target cannot take it)."""
    at = {fig: j for j, fig in enumerate(col)}
    vals = np.array([[0.0 if x is None else x for x in c] for c in col.values()], np.float64)
    none = np.array([[x is None for x in c] for c in col.values()], np.bool_)
    idx = [at[f] for f in figs]
    return vals[idx], none[idx]


def _first_nan(reduced: Floats, first: Floats) -> list[float]:
    """A column's min or max as Python's min/max take it: NaN when its first value
    is NaN, the NaN-skipping reduction otherwise."""
    out = reduced.copy()
    out[np.isnan(first)] = math.nan
    return [float(x) for x in out.tolist()]
