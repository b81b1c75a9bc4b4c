"""A candidate move's exact effect on the cluster score, from the two to four nodes
it changes: the current means and standard deviations of the scored per-node
values (`Stats`, with n times each variance); the exclusion-tag and
location-exclusion components of one primary change (`Deltas.tags_delta`); node
changes as arrays (`node_changes`); and every node's exact delta as the taker of
a copy (`Copies`) or of a primary (`Primaries`) for many own sides at once: each
changed value's change (d1) and change of squared deviation from the mean (d2)
summed per metric, then each standard deviation rebuilt from n V + d2 and d1.
tests/unit/balance/test_balance_search.py holds every improving move's delta to the full
score. The idea
of `reactors.placement.score_delta`, extended to failovers and to moves that take a copy
off a node.

Pure: no I/O, no logging, no asyncio; it reads the `Work` and the `NodeArrays`, never
changes them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from reactors.balance.step.arrays import Bools, Floats, Ints, NodeArrays
from reactors.balance.work import (
    M_WEIGHT,
    NM,
    W_LOC_EXCL,
    W_N1,
    W_OFF_ALL,
    W_OFF_PRI,
    W_RTOTAL,
    W_TAGS,
    Work,
    WorkInstance,
)

Change = tuple[Floats, Floats, Floats]  # new values, old values, scalar


def node_changes(
    a: NodeArrays,
    k: Ints,
    dfm: Ints,
    dstop: Ints,
    ddsk: Ints,
    dcpu: Ints,
    dsp: Ints,
    dnp: Ints | int,
    dns: Ints | int,
    new_r: Ints,
) -> Change:
    """`Work.node_change` (and `reactors.balance.step.sides._cf`) for every row: node k's new
    values (`Work.node_values`), its old ones and the change of the scalar
    components."""
    np_old, ns_old = a.n_pri[k], a.n_sec[k]
    np_new, ns_new = np_old + dnp, ns_old + dns
    f_new = a.f_mem[k] + dfm
    t_mem, t_dsk, sden = a.t_mem[k], a.t_dsk[k], a.sden[k]
    isp = a.ispind[k] + dsp
    new = np.empty((k.size, NM))
    new[:, 0] = (f_new - a.over[k]) / t_mem
    new[:, 1] = (f_new - (a.stopped[k] + dstop)) / t_mem
    new[:, 2] = np.where(t_dsk == 0, 1.0, (a.f_dsk[k] + ddsk) / t_dsk)
    new[:, 3] = new_r / t_mem
    new[:, 4] = (a.used_cpus[k] + dcpu) / a.t_cpu[k] / a.speed[k]
    new[:, 5] = np_new
    new[:, 6] = np_new + ns_new
    new[:, 7] = np.where(sden != 0, isp / sden, np.where(isp == 0, math.nan, math.inf))
    old = a.vals[k]
    scalar = W_RTOTAL * (new[:, 3] - old[:, 3])
    fail_old = a.f_mem[k] < a.r_mem[k]
    fail_new = f_new < new_r
    n1 = (np_new + ns_new) * fail_new - (np_old + ns_old) * fail_old
    scalar = np.where(fail_old | fail_new, scalar + W_N1 * n1, scalar)
    scalar = np.where(a.online[k], scalar, W_OFF_ALL * (dnp + dns) + W_OFF_PRI * dnp)
    return new, old, scalar


# The metrics a node taking a copy does not change, and where their d1 and d2
# are in a row of sums (`Copies.deltas`).
_SAME = [m for m in range(NM) if m not in (2, 3, 6, 7)]
_SAME_D1 = [2 * m for m in _SAME]
_SAME_D2 = [2 * m + 1 for m in _SAME]


@dataclass(slots=True)
class Stats:
    """Per metric: the current mean, the number of online nodes, the current
    standard deviation; deviations of candidate values are taken from the mean."""

    center: list[float]
    std: list[float]
    n: int


def stats_of(work: Work) -> Stats:
    on = work.online_idx
    n = len(on)
    center: list[float] = []
    std: list[float] = []
    for m in range(NM):
        xs = [work.vals[k][m] for k in on]
        mean = sum(xs) / n
        center.append(mean)
        std.append(math.sqrt(sum((x - mean) * (x - mean) for x in xs) / n))
    return Stats(center=center, std=std, n=n)


@dataclass(slots=True)
class LoadStats:
    """Per dynamic load (cpu, mem, disk, net; `Work.loads`): the current mean,
    standard deviation and n times the variance."""

    center: list[float]
    std: list[float]
    vn: list[float]


def load_stats_of(work: Work) -> LoadStats:
    on = work.online_idx
    n = len(on)
    center: list[float] = []
    std: list[float] = []
    for j in range(4):
        xs = [work.loads[k][j] for k in on]
        mean = sum(xs) / n
        center.append(mean)
        std.append(math.sqrt(sum((x - mean) * (x - mean) for x in xs) / n))
    return LoadStats(center=center, std=std, vn=[sd * sd * n for sd in std])


class Deltas:
    """Exact score deltas at the current placement; `start` at every step."""

    def __init__(self, work: Work) -> None:
        self.w = work
        self.stats = stats_of(work)
        self.vn: list[float] = []
        self.load_stats = LoadStats([], [], [])
        self.tags_memo: dict[tuple[tuple[str, ...], int, int], float] = {}

    def start(self) -> None:
        """A new step: the current means and deviations (with utilisation
        weights, the loads' too), an empty memo."""
        self.stats = stats_of(self.w)
        self.vn = [std * std * self.stats.n for std in self.stats.std]  # n V
        if self.w.util:
            self.load_stats = load_stats_of(self.w)
        self.tags_memo = {}

    def tags_delta(self, inst: WorkInstance, src: int, dst: int) -> float:
        """The change of the tag and location-exclusion components when the
        instance's primary moves from src to dst. Memoised for the step."""
        if not inst.excl:
            return 0.0
        key = (inst.excl, src, dst)
        hit = self.tags_memo.get(key)
        if hit is None:
            hit = self.tags_memo[key] = self._tags_delta(inst, src, dst)
        return hit

    def _tags_delta(self, inst: WorkInstance, src: int, dst: int) -> float:
        w = self.w
        out = 0.0
        if w.online[src]:
            tags = w.ptags[src]
            out -= W_TAGS * sum(1 for e in inst.excl if tags[e] >= 2)
        if w.online[dst]:
            tags = w.ptags[dst]
            out += W_TAGS * sum(1 for e in inst.excl if tags[e] >= 1)
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
                out += W_LOC_EXCL * (
                    (after - (1 if after > 0 else 0)) - (before - (1 if before > 0 else 0))
                )
        return out


class Copies:
    """What taking a copy changes at every node, for one step: per instance
    figure (disk, spindle use; reservation and N+1 peer) and node, the change of
    each value a copy changes (d1, d2, as the module docstring says), the
    scalar's change and whether the node can take it; and every node's exact
    delta for many own sides at once (`deltas`)."""

    def __init__(
        self, a: NodeArrays, st: Stats, vn: list[float], figures: tuple[Ints, Ints, Ints]
    ) -> None:
        dsk, su, res = figures
        self.a = a
        self.st = st
        self.vn = vn
        self.n_res = res.size
        vals, c = a.vals, st.center
        t_dsk, sden, t_mem = a.t_dsk, a.sden, a.t_mem
        n_nodes = t_mem.size
        with np.errstate(all="ignore"):
            self.disk = _dd(
                np.where(t_dsk == 0, 1.0, (a.f_dsk - dsk[:, None]) / t_dsk), vals[:, 2], c[2]
            )
            self.disk_ok = a.f_dsk >= dsk[:, None]
            # the spindle-ratio policy (htools' hiSpindles), per spindle use
            self.spin_ok = a.ispind + su[:, None] <= a.spin_cap
            # per (peer, reservation): the node's reserved memory once it takes the copy
            r_new = np.maximum(a.r_mem, a.res[:, None, :] + res[None, :, None])
            r_new = r_new.reshape(n_nodes * res.size, n_nodes)
            rem = r_new / t_mem
            self.rem = _dd(rem, vals[:, 3], c[3])
            scalar = W_RTOTAL * (rem - vals[:, 3])
            fail_old = a.f_mem < a.r_mem
            fail_new = a.f_mem < r_new
            n1 = (a.n_all + 1) * fail_new - a.n_all * fail_old
            self.scalar = np.where(fail_old | fail_new, scalar + W_N1 * n1, scalar)
            ok = r_new <= a.c_free
            if a.loc is not None:
                ok &= ~np.repeat(a.loc, res.size, axis=0)
            self.rem_ok = ok
            self.all = _dd((a.n_all + 1).astype(np.float64)[None, :], vals[:, 6], c[6])
            isp = a.ispind + su[:, None]
            spin = np.where(sden != 0, isp / sden, np.where(isp == 0, math.nan, math.inf))
            self.spin = _dd(spin, vals[:, 7], c[7])
        self.every = np.arange(n_nodes)

    def deltas(
        self, base: Floats, sc0: Floats, loc: Floats, at: tuple[Ints, Ints, Ints, Ints, Ints]
    ) -> tuple[Floats, Bools]:
        """Per own side (row) and node: the exact delta of the node taking the
        copy, from the side's own part (`base`: d1 and d2 per metric; `sc0`: its
        scalar; `loc`: its location part), the node's d1 and d2 added and the
        standard deviations rebuilt; and whether the
        node can take it. `at`: per row its disk, spindle-use and (peer,
        reservation) figures' positions, its primary and its secondary."""
        fd, fs, fr, p, s = at
        st, vn = self.st, self.vn
        n, std = st.n, st.std
        with np.errstate(all="ignore"):
            # the metrics taking a copy leaves alone, all at once
            d1s, d2s = base[:, _SAME_D1], base[:, _SAME_D2]
            var = (np.array([vn[m] for m in _SAME]) + d2s) / n - (d1s / n) * (d1s / n)
            weight = np.array([M_WEIGHT[m] for m in _SAME])
            sd = np.array([std[m] for m in _SAME])
            term = weight * (np.where(var > 0.0, np.sqrt(var), 0.0) - sd)
            same = np.where((d1s == 0.0) & (d2s == 0.0), 0.0, term)
            changes = {
                2: (self.disk, fd),
                3: (self.rem, fr),
                6: (self.all, None),
                7: (self.spin, fs),
            }
            out: Floats | float = 0.0
            for m in range(NM):
                hit = changes.get(m)
                if hit is None:
                    j = _SAME.index(m)
                    out = out + same[:, j : j + 1]
                    continue
                (dd1, dd2), rows = hit
                if rows is None:
                    d1 = base[:, 2 * m, None] + dd1
                    d2 = base[:, 2 * m + 1, None] + dd2
                else:
                    d1 = base[:, 2 * m, None] + dd1[rows]
                    d2 = base[:, 2 * m + 1, None] + dd2[rows]
                var = (vn[m] + d2) / n - (d1 / n) * (d1 / n)
                term = M_WEIGHT[m] * (np.where(var > 0.0, np.sqrt(var), 0.0) - std[m])
                out = out + np.where((d1 == 0.0) & (d2 == 0.0), 0.0, term)
            d = (sc0[:, None] + self.scalar[fr]) + out + loc[:, None]
        every = self.every
        ok = (
            (every != p[:, None])
            & (every != s[:, None])
            & self.disk_ok[fd]
            & self.spin_ok[fs]
            & self.rem_ok[fr]
        )
        return np.asarray(d, dtype=np.float64), ok


def _dd(new: Floats, old: Floats, c: float) -> tuple[Floats, Floats]:
    """Where a node's value changes from `old` to `new`: the change (d1) and the
    change of its squared deviation from c (d2); 0 where it does not."""
    changed = new != old
    return (
        np.where(changed, new - old, 0.0),
        np.where(changed, (new - c) * (new - c) - (old - c) * (old - c), 0.0),
    )


class Primaries:
    """What taking an instance's primary (and its copy) changes at every node,
    for one step: per instance figure (running memory, memory, disk, vCPUs,
    spindle use) and node, the change of each value (d1, d2, as the module
    docstring says) and of the scalar; and every node's exact
    delta as the new primary of many replace-and-failover and replace-primary
    own sides at once (`deltas`)."""

    def __init__(
        self, a: NodeArrays, st: Stats, vn: list[float], figures: tuple[Ints, ...]
    ) -> None:
        run, mem, dsk, cpu, su = figures
        self.a = a
        self.st = st
        self.vn = vn
        vals, c = a.vals, st.center
        f_new = a.f_mem - run[:, None]
        with np.errstate(all="ignore"):
            isp = a.ispind + su[:, None]
            rem = a.r_mem / a.t_mem
            self.tabs = (
                _dd((f_new - a.over) / a.t_mem, vals[:, 0], c[0]),
                _dd((a.f_mem - a.stopped - mem[:, None]) / a.t_mem, vals[:, 1], c[1]),
                _dd(
                    np.where(a.t_dsk == 0, 1.0, (a.f_dsk - dsk[:, None]) / a.t_dsk),
                    vals[:, 2],
                    c[2],
                ),
                _dd(rem[None, :], vals[:, 3], c[3]),
                _dd((a.used_cpus + cpu[:, None]) / a.t_cpu / a.speed, vals[:, 4], c[4]),
                _dd((a.n_pri + 1).astype(np.float64)[None, :], vals[:, 5], c[5]),
                _dd((a.n_all + 1).astype(np.float64)[None, :], vals[:, 6], c[6]),
                _dd(
                    np.where(a.sden != 0, isp / a.sden, np.where(isp == 0, math.nan, math.inf)),
                    vals[:, 7],
                    c[7],
                ),
            )
            scalar = W_RTOTAL * (rem - vals[:, 3])
            fail_old = a.f_mem < a.r_mem
            fail_new = f_new < a.r_mem
            n1 = (a.n_all + 1) * fail_new - a.n_all * fail_old
            self.scalar = np.where(fail_old | fail_new, scalar + W_N1 * n1, scalar)
        self.every = np.arange(a.t_mem.size)

    def deltas(
        self,
        base: Floats,
        sc0: Floats,
        own: tuple[Ints, Ints, Ints, Ints, Ints, Ints, Ints],
        at: tuple[Ints, Ints, Ints, Ints, Ints],
    ) -> Floats:
        """Per own side (row) and node t: the exact delta of t taking the
        primary, without its tag and location parts, from the side's own part
        (`base`: d1 and d2 per metric; `sc0`: its scalar) plus the change of the
        node the side keeps a copy on (`own`: that node k, its changes of free
        memory, stopped memory, vCPUs, primaries, secondaries, and its reserved
        memory once t is its peer, per row and node), d1 and d2 of both nodes
        added and the standard deviations rebuilt.
        `at`: per row its figures' positions."""
        a, st, vn = self.a, self.st, self.vn
        n, std, c = st.n, st.std, st.center
        k, dfm, dstop, dcpu, dnp, dns, new_r = own
        zero = np.zeros(k.size, dtype=np.int64)
        on = a.online[k][:, None]
        with np.errstate(all="ignore"):
            new, old, _ = node_changes(a, k, dfm, dstop, zero, dcpu, zero, dnp, dns, a.r_mem[k])
            ch = (new != old) & on
            e1 = np.where(ch, new - old, 0.0)
            e2 = np.where(ch, (new - c) * (new - c) - (old - c) * (old - c), 0.0)
            # p_rem of node k with t as its new peer, per row and node
            nv3, ov3, c3 = new_r / a.t_mem[k][:, None], old[:, 3, None], c[3]
            ch3 = (nv3 != ov3) & on
            own3 = (
                np.where(ch3, nv3 - ov3, 0.0),
                np.where(ch3, (nv3 - c3) * (nv3 - c3) - (ov3 - c3) * (ov3 - c3), 0.0),
            )
            sc = W_RTOTAL * (nv3 - ov3)
            f_new = (a.f_mem[k] + dfm)[:, None]
            fail_old = (a.f_mem[k] < a.r_mem[k])[:, None]
            fail_new = f_new < new_r
            all_new = (a.n_pri[k] + dnp + a.n_sec[k] + dns)[:, None]
            n1 = all_new * fail_new - a.n_all[k][:, None] * fail_old
            sc = np.where(fail_old | fail_new, sc + W_N1 * n1, sc)
            sc = np.where(on, sc, (W_OFF_ALL * (dnp + dns) + W_OFF_PRI * dnp)[:, None])
            fr, fm, fd, fc, fs = at
            rows_of = (fr, fm, fd, None, fc, None, None, fs)
            out: Floats | float = 0.0
            for m in range(NM):
                (t1, t2), rows = self.tabs[m], rows_of[m]
                if rows is not None:
                    t1, t2 = t1[rows], t2[rows]
                if m == 3:
                    d1 = (base[:, 6, None] + own3[0]) + t1
                    d2 = (base[:, 7, None] + own3[1]) + t2
                else:
                    d1 = (base[:, 2 * m, None] + e1[:, m, None]) + t1
                    d2 = (base[:, 2 * m + 1, None] + e2[:, m, None]) + t2
                var = (vn[m] + d2) / n - (d1 / n) * (d1 / n)
                term = M_WEIGHT[m] * (np.where(var > 0.0, np.sqrt(var), 0.0) - std[m])
                out = out + np.where((d1 == 0.0) & (d2 == 0.0), 0.0, term)
            d = ((sc0[:, None] + sc) + self.scalar[fr]) + out
        return np.asarray(d, dtype=np.float64)
