"""The node figures the search bounds and scores many candidates with, as arrays:
per node its free disk and memory, stopped memory, reserved memory (largest and
second largest peer), corral's free memory, vCPUs, CPUs used, spindle use,
primaries and copies held and scored values, and what each node reserves for
each N+1 peer, and how many of each exclusion-tag set its primaries have
(`NodeArrays`). Kept from step to step and refreshed only for the nodes a move
changed (`Work.version`). Also the per-target tables the bounds of a family of
own sides are built from, stacked into one array each (`Table`, `Tables`,
`stack_tables`).

Pure: no I/O, no logging, no asyncio; a read-only mirror of `reactors.balance.work`
(it never changes the `Work`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from reactors.balance.work import NM, W_LOC_EXCL, W_TAGS, Work

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]


class NodeArrays:
    """Per node (by index) the working model's figures; `res[peer, node]`: what
    node reserves for peer (its N+1 row); `loc[a, b]`: whether nodes a and b share
    a location (None: no locations), `loc_n[a, b]`: how many; `tag1[e, node]`,
    `tag2[e, node]`: how many of the exclusion tags with id e (`excl_id`, by
    instance) the node's primaries have at least once, twice."""

    def __init__(self, work: Work) -> None:
        n_nodes = len(work.names)
        self.t_mem = np.array(work.t_mem, dtype=np.float64)
        self.over = np.array(work.over, dtype=np.int64)
        self.spin_cap = np.array(work.spin_cap, dtype=np.float64)
        self.t_dsk = np.array(work.t_dsk, dtype=np.float64)
        self.sden = np.array(work.sden, dtype=np.float64)
        self.vcpu_limit = np.array(work.vcpu_limit, dtype=np.float64)
        self.t_cpu = np.array(work.t_cpu, dtype=np.int64)
        self.speed = np.array(work.speed, dtype=np.float64)
        self.online = np.array(work.online, dtype=np.bool_)
        self.usable = np.array(work.usable, dtype=np.bool_)
        self.loc: Bools | None = None
        # how many locations nodes a and b share
        self.loc_n = np.array([[len(a & b) for b in work.locs] for a in work.locs], np.int64)
        if work.has_locs:
            self.loc = self.loc_n.reshape(n_nodes, n_nodes) > 0
        self.res = np.zeros((n_nodes, n_nodes), dtype=np.int64)
        self.f_dsk = np.zeros(n_nodes, dtype=np.int64)
        self.r_mem = np.zeros(n_nodes, dtype=np.int64)
        self.r2 = np.zeros(n_nodes, dtype=np.int64)
        self.c_free = np.zeros(n_nodes, dtype=np.int64)
        self.f_mem = np.zeros(n_nodes, dtype=np.int64)
        self.all_vcpus = np.zeros(n_nodes, dtype=np.int64)
        self.ispind = np.zeros(n_nodes, dtype=np.int64)
        self.n_all = np.zeros(n_nodes, dtype=np.int64)
        self.n_pri = np.zeros(n_nodes, dtype=np.int64)
        self.n_sec = np.zeros(n_nodes, dtype=np.int64)
        self.stopped = np.zeros(n_nodes, dtype=np.int64)
        self.used_cpus = np.zeros(n_nodes, dtype=np.int64)
        self.vals = np.zeros((n_nodes, NM))
        self.seen = [-1] * n_nodes  # each node's `Work.version` its figures are of
        # every instance's exclusion tags by id (0: none); per id and node, how
        # many of them the node's primaries have at least once and at least twice
        ids: dict[tuple[str, ...], int] = {(): 0}
        self.excl_id = np.array([ids.setdefault(x.excl, len(ids)) for x in work.insts], np.int64)
        self.excls = list(ids)
        self.tag1 = np.zeros((len(ids), n_nodes), dtype=np.int64)
        self.tag2 = np.zeros((len(ids), n_nodes), dtype=np.int64)
        self._loc_of: Floats | None = None  # `loc_excl_moved`'s node x location
        self._loc_names: list[str] = []
        self._loc_counts: tuple[tuple[int, ...], Floats, Floats] | None = None

    def refresh(self, work: Work) -> list[int]:
        """Copy the figures of every node that changed since the last refresh
        (all of them the first time); returns those nodes."""
        changed: list[int] = []
        for k, version in enumerate(work.version):
            if version == self.seen[k]:
                continue
            self.seen[k] = version
            changed.append(k)
            self.res[:, k] = 0
            for peer, v in work.rows[k].items():
                self.res[peer, k] = v
            self.f_dsk[k] = work.f_dsk[k]
            self.r_mem[k] = work.r_mem[k]
            self.r2[k] = work.r2[k]
            self.c_free[k] = work.c_free[k]
            self.f_mem[k] = work.f_mem[k]
            self.all_vcpus[k] = work.all_vcpus[k]
            self.ispind[k] = work.ispind[k]
            self.n_all[k] = work.n_pri[k] + work.n_sec[k]
            self.n_pri[k] = work.n_pri[k]
            self.n_sec[k] = work.n_sec[k]
            self.stopped[k] = work.stopped[k]
            self.used_cpus[k] = work.used_cpus[k]
            self.vals[k] = work.vals[k]
            tags = work.ptags[k]
            for eid, excl in enumerate(self.excls):
                self.tag1[eid, k] = sum(1 for e in excl if tags[e] >= 1)
                self.tag2[eid, k] = sum(1 for e in excl if tags[e] >= 2)
        return changed

    def tags_moved(self, eid: Ints, src: Ints, dst: Ints | None) -> Floats:
        """`Deltas.tags_delta` without locations, for instances with exclusion
        tags `eid` moving their primary from `src` to `dst` (None: to every
        node, one column each), operation for operation."""
        on = self.online
        out = np.where(on[src], 0.0 - W_TAGS * self.tag2[eid, src], 0.0)
        if dst is None:
            out = np.where(on, out[:, None] + W_TAGS * self.tag1[eid], out[:, None])
            return np.where((eid == 0)[:, None], 0.0, out)
        out = np.where(on[dst], out + W_TAGS * self.tag1[eid, dst], out)
        return np.where(eid == 0, 0.0, out)

    def loc_excl_moved(self, work: Work, eid: Ints, src: Ints) -> Floats:
        """The location-exclusion part of `Deltas.tags_delta` for instances with
        exclusion tags `eid` moving their primary from `src` to every node (one
        column each). A (location, tag) pair counted b times scores b - 1 (0 when
        b is 0): a primary joining a location gains 1 per tag already there, one
        leaving loses 1 per tag there at least twice; a location both nodes are
        in changes nothing. Counts are whole numbers, so the sum is exact."""
        if self._loc_of is None:
            locs = sorted({loc for k in range(len(work.names)) for loc in work.locs[k]})
            self._loc_names = locs
            # node x location, online nodes only (an offline node's primaries
            # are not counted)
            self._loc_of = np.array(
                [
                    [work.online[k] and loc in work.locs[k] for loc in locs]
                    for k in range(len(work.names))
                ],
                dtype=np.float64,
            )
        m = self._loc_of
        # per exclusion-tag set and location, how many of its tags are there at
        # least once (g1) and twice (g2); the same until a move changes a node
        placement = tuple(work.version)
        if self._loc_counts is None or self._loc_counts[0] != placement:
            counts = work.loc_excl
            g = [
                np.array(
                    [
                        [
                            sum(1 for e in excl if counts.get((loc, e), 0) >= at)
                            for loc in self._loc_names
                        ]
                        for excl in self.excls
                    ],
                    dtype=np.float64,
                )
                for at in (1, 2)
            ]
            self._loc_counts = (placement, g[0], g[1])
        _, g1, g2 = self._loc_counts
        ms = m[src]
        joined = (g1[eid] * (1.0 - ms)) @ m.T
        left = (g2[eid] * ms).sum(axis=1)[:, None] - (g2[eid] * ms) @ m.T
        out: Floats = W_LOC_EXCL * (joined - left)
        return out


@dataclass(frozen=True, slots=True)
class Table:
    """One metric's table in a family, before stacking: per used key its
    figure (`at`), which figures the used keys have (`used`), and per figure
    and target either the target's new value (`news`) or its (low, high,
    scalar) and where it cannot take the figure (`ready`)."""

    m: int
    at: Ints
    used: Bools
    news: Floats | None
    ready: tuple[Floats, Floats, Floats, Bools] | None = None


@dataclass(frozen=True, slots=True)
class Tables:
    """A family's tables, stacked: per row (a table's figure) and target the
    (low, high, scalar) of the target taking it (`none`: where it cannot) and
    each row's metric; per table, in the order the bound sums them, its
    metric, per used key its row and the rows the used keys have. Also its
    used key ids (ascending), the bound's start (None: the first table's h)
    and per used key and target whether the target can take it."""

    kids: Ints
    low: Floats
    high: Floats
    scalar: Floats
    none: Bools
    metric: Ints
    cols: list[tuple[int, Ints, Ints]]
    start: Floats | None
    ok: Bools

    def matrix(self, slopes: list[tuple[float, float]]) -> Floats:
        """Per used key and target, the target's bound: per table scalar + the
        weighted h of its low (NaN: -inf, the bound is void), summed."""
        k_neg = np.array([k for k, _ in slopes])[self.metric][:, None]
        k_pos = np.array([k for _, k in slopes])[self.metric][:, None]
        low = self.low
        h = self.scalar + low * np.where(low < 0.0, k_neg, k_pos)
        h[np.isnan(h)] = -math.inf
        out = self.start
        for _, at, _ in self.cols:
            out = h[at] if out is None else out + h[at]
        assert out is not None
        return out

    def ranges(self) -> list[tuple[float, float]]:
        """Per metric, the lowest low and the highest high over the figures in
        use (and 0)."""
        lo = [0.0] * NM
        hi = [0.0] * NM
        low = np.fmin.reduce(np.where(self.none, math.nan, self.low), axis=1, initial=math.nan)
        high = np.fmax.reduce(np.where(self.none, math.nan, self.high), axis=1, initial=math.nan)
        for m, _, used in self.cols:
            if used.size:
                least = float(np.fmin.reduce(low[used]))
                most = float(np.fmax.reduce(high[used]))
                lo[m] = least if least < 0.0 else 0.0
                hi[m] = most if most > 0.0 else 0.0
        return list(zip(lo, hi, strict=True))


def stack_tables(
    kids: Ints,
    tables: list[Table],
    start: Floats | None,
    ok: Bools,
    old_vals: Floats,
    center: list[float],
    n: float,
) -> Tables:
    """A family's tables stacked (`old_vals`: per target its values; `center`:
    the means; `n`: the online nodes); the tables of new values are turned into
    the (low, high, 0) of `Bounds`' one-side bound, all at once: low = d2/n -
    2 (d1/n)^2, high = d2/n for the change d1 of the value and d2 of its squared
    deviation from the mean."""
    plain = [tb for tb in tables if tb.ready is None]
    news = np.concatenate([tb.news for tb in plain if tb.news is not None])
    metric = np.repeat([tb.m for tb in plain], [tb.used.size for tb in plain])
    old = old_vals.T[metric]
    c = np.array(center)[metric][:, None]
    d1 = news - old
    d2 = (news - c) * (news - c) - (old - c) * (old - c)
    lows, highs = [d2 / n - 2.0 * _pow2(d1 / n)], [d2 / n]
    scalars, nones = [np.zeros(news.shape)], [np.zeros(news.shape, dtype=np.bool_)]
    metrics = [metric]
    cols: list[tuple[int, Ints, Ints]] = []
    at = 0
    offsets: dict[int, int] = {}
    for tb in plain:
        offsets[id(tb)] = at
        at += tb.used.size
    for tb in tables:
        if tb.ready is not None:
            offsets[id(tb)] = at
            low, high, scalar, none = tb.ready
            lows.append(low)
            highs.append(high)
            scalars.append(scalar)
            nones.append(none)
            metrics.append(np.full(tb.used.size, tb.m))
            at += tb.used.size
        first = offsets[id(tb)]
        cols.append((tb.m, first + tb.at, first + np.flatnonzero(tb.used)))
    return Tables(
        kids,
        np.concatenate(lows),
        np.concatenate(highs),
        np.concatenate(scalars),
        np.concatenate(nones),
        np.concatenate(metrics),
        cols,
        start,
        ok,
    )


def _pow2(x: Floats) -> Floats:
    """x ** 2 element by element as Python's float power gives it (the C
    library's pow, which is not always x * x)."""
    return np.array([v**2 for v in x.ravel().tolist()], dtype=np.float64).reshape(x.shape)
