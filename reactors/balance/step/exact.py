"""A move's exact effect on the score, worked out plainly from the two to four
nodes it changes (`move_delta`, the balancer's own figures, with the dynamic
loads when instances carry utilisation weights), every single move of an
instance (`single_moves`), and the greedy step done plainly over them
(`ExactSearch`: every instance, every single move, each checked by the rules
and scored by `move_delta`).

`ExactSearch` is the step on clusters whose instances carry `hbal -U`
utilisation weights: the fast search (`reactors.balance.step.search`) bounds and
batches primaries and instances as counts, which is what the loads are without
weights, so with them it would search on the wrong score. It answers `best`
as `Search.best` does (the same candidates for the same score), scoring every
candidate, so it costs about one `held_back` per step.

Pure: no I/O, no logging; it reads the `Work`, never changes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from reactors.balance.moves import MIGRATIONS, MoveKind
from reactors.balance.rules import check_move
from reactors.balance.step.arrays import Floats, Ints, NodeArrays
from reactors.balance.step.deltas import Deltas, Stats, node_changes
from reactors.balance.step.search import Candidate, move_key
from reactors.balance.work import LOAD_METRICS, LOAD_WEIGHT, M_WEIGHT, NM, W_LOC, Work

# The least gain a move must have to be a candidate (as `Search`'s).
_EPS = 1e-9


def single_moves(work: Work, i: int) -> list[tuple[int, int]]:
    """Every (new primary, new secondary) one move of instance i can reach:
    its failover, then per other node replace-secondary, failover-and-replace,
    replace-and-failover and replace-primary."""
    p, s = work.p[i], work.s[i]
    out = [(s, p)]
    for t in range(len(work.names)):
        if t in (p, s):
            continue
        out += [(p, t), (s, t), (t, p), (t, s)]
    return out


def _roles(k: int, p: int, s: int) -> tuple[int, int]:
    return int(k == p), int(k == s)


def move_delta(work: Work, deltas: Deltas, i: int, new_p: int, new_s: int) -> float:
    """The exact change of the score if instance i moved to (new_p, new_s),
    rules aside."""
    w = work
    inst = w.insts[i]
    p, s = w.p[i], w.s[i]
    st: Stats = deltas.stats
    d1 = [0.0] * NM
    d2 = [0.0] * NM
    l1 = [0.0] * 4
    l2 = [0.0] * 4
    scalar = 0.0
    util = w.util
    for k in {p, s, new_p, new_s}:
        was_p, was_s = _roles(k, p, s)
        is_p, is_s = _roles(k, new_p, new_s)
        row = dict(w.rows[k])
        if was_s:
            row[p] = row.get(p, 0) - inst.res
        if is_s:
            row[new_p] = row.get(new_p, 0) + inst.res
        new_r = max(row.values(), default=0)
        held = (was_p or was_s) - (is_p or is_s)
        old, new, sc = w.node_change(
            k,
            inst.run_mem * (was_p - is_p),
            inst.stop_mem * (is_p - was_p),
            inst.dsk * held,
            inst.vcpus * (is_p - was_p),
            -inst.su * held,
            is_p - was_p,
            is_s - was_s,
            new_r,
        )
        scalar += sc
        if not old:
            continue
        for m in range(NM):
            c = st.center[m]
            d1[m] += new[m] - old[m]
            d2[m] += (new[m] - c) * (new[m] - c) - (old[m] - c) * (old[m] - c)
        if util:
            _load_change(w, deltas, k, i, is_p - was_p, -held, l1, l2)
    total = scalar
    for m in range(NM):
        if (d1[m] == 0.0 and d2[m] == 0.0) or (util and m in LOAD_METRICS):
            continue
        total += _std_change(M_WEIGHT[m], deltas.vn[m], st.std[m], st.n, d1[m], d2[m])
    if util:
        ls = deltas.load_stats
        for j in range(4):
            if l1[j] != 0.0 or l2[j] != 0.0:
                total += _std_change(LOAD_WEIGHT[j], ls.vn[j], ls.std[j], st.n, l1[j], l2[j])
    if new_p != p:
        total += deltas.tags_delta(inst, p, new_p) + w.missed(inst, new_p) - w.missed(inst, p)
    if w.has_locs:
        before = len(w.locs[p] & w.locs[s]) if w.online[p] else 0
        after = len(w.locs[new_p] & w.locs[new_s]) if w.online[new_p] else 0
        total += W_LOC * (after - before)
    return total


def _std_change(weight: float, vn: float, std: float, n: int, d1: float, d2: float) -> float:
    """The weighted change of a standard deviation whose values' sum changes
    by d1 and whose squared deviations from the old mean by d2."""
    var = (vn + d2) / n - (d1 / n) * (d1 / n)
    return weight * (math.sqrt(var) if var > 0.0 else 0.0) - weight * std


def _load_change(
    w: Work, deltas: Deltas, k: int, i: int, dpri: int, dhold: int, l1: list[float], l2: list[float]
) -> None:
    """Add node k's change of the four loads (d1, d2) when it gains (+1) or
    loses (-1) instance i's primary (`dpri`) and a copy of it (`dhold`)."""
    old = w.loads[k]
    u = w.insts[i].load
    c = deltas.load_stats.center
    for j in range(4):
        step = dhold if j == 2 else dpri
        if not step:
            continue
        new = old[j] + step * u[j]
        l1[j] += new - old[j]
        l2[j] += (new - c[j]) * (new - c[j]) - (old[j] - c[j]) * (old[j] - c[j])


class ExactSearch:
    """The greedy step scoring every single move of every movable instance
    exactly, all at once as arrays (`best`, as `Search.best`); the rules are
    checked (`check_move`) only for the candidates a step could keep, best
    first."""

    def __init__(self, work: Work) -> None:
        self.w = work
        self.deltas = Deltas(work)
        self.arrays = NodeArrays(work)
        self.scored = 0
        w = work
        self.idx = np.array([i for i, m in enumerate(w.movable) if m], dtype=np.int64)
        ins = [w.insts[i] for i in self.idx.tolist()]

        def col(values: list[int]) -> Ints:
            return np.array(values, dtype=np.int64)

        self.run = col([x.run_mem for x in ins])
        self.stop = col([x.stop_mem for x in ins])
        self.dsk = col([x.dsk for x in ins])
        self.cpu = col([x.vcpus for x in ins])
        self.su = col([x.su for x in ins])
        self.res = col([x.res for x in ins])
        self.load = np.array([x.load for x in ins], dtype=np.float64).reshape(len(ins), 4)
        self.eid = self.arrays.excl_id[self.idx] if self.idx.size else col([])
        self._missed: Floats | None = None

    def missed(self) -> Floats:
        """Per movable instance and node, `Work.missed` (kept: it depends on
        neither placement)."""
        if self._missed is None:
            w = self.w
            self._missed = np.array(
                [[w.missed(w.insts[i], k) for k in range(len(w.names))] for i in self.idx.tolist()],
                dtype=np.float64,
            ).reshape(self.idx.size, len(w.names))
        return self._missed

    def best(self, *, tolerance: float, top: int = 0) -> list[Candidate]:
        """Every candidate within `tolerance` of the best gain, the best first
        (equal deltas in the order failover, replace-secondary,
        failover-and-replace, replace-and-failover, replace-primary, then by
        instance and target); with `top` > 0 only those up to the `top`-th
        distinct move (`move_key`)."""
        w = self.w
        if not self.idx.size:
            return []
        self.deltas.start()
        self.arrays.refresh(w)
        table = _Step(self).table()
        self.scored += int(table.delta.size)
        out: list[Candidate] = []
        limit = -_EPS
        seen: set[tuple[int, int, int]] = set()
        for j in _best_first(table.delta):
            d = float(table.delta[j])
            if not (d < -_EPS and d <= limit + 1e-12):
                break
            i, new_p, new_s = int(table.inst[j]), int(table.new_p[j]), int(table.new_s[j])
            kind = check_move(w, i, new_p, new_s)
            if kind is None:
                continue
            data = 0 if kind is MoveKind.FAILOVER else w.insts[i].dsk
            cand = Candidate(d, data, MIGRATIONS[kind], kind, i, new_p, new_s)
            if not out:
                limit = d * (1 - tolerance)
            out.append(cand)
            if top:
                seen.add(move_key(cand))
                if len(seen) == top:
                    break
        return out


def _best_first(delta: Floats) -> Iterator[int]:
    """The positions of `delta`, lowest first (equal ones in position order):
    the lowest few sorted first, the rest only if they are asked for."""
    few = 256
    if delta.size <= few:
        yield from np.argsort(delta, kind="stable").tolist()
        return
    part = np.argpartition(delta, few)[:few]
    # those below the largest of the few: every one of them, none left out
    part = part[delta[part] < delta[part].max()]
    part = part[np.lexsort((part, delta[part]))]
    yield from part.tolist()
    order = np.argsort(delta, kind="stable")
    yield from order[part.size :].tolist()


@dataclass(frozen=True, slots=True)
class _Table:
    """Every candidate of a step: its delta (+inf where a target cannot be one:
    one of the instance's nodes, unusable, too little disk), instance and new
    nodes."""

    delta: Floats
    inst: Ints
    new_p: Ints
    new_s: Ints


@dataclass(frozen=True, slots=True)
class _Figs:
    """Per row an instance's figures: running and stopped memory, disk, vCPUs,
    spindle use, reservation, loads (cpu, mem, disk, net)."""

    run: Ints
    stop: Ints
    dsk: Ints
    cpu: Ints
    su: Ints
    res: Ints
    load: Floats

    def repeat(self, times: int) -> _Figs:
        return _Figs(
            run=np.repeat(self.run, times),
            stop=np.repeat(self.stop, times),
            dsk=np.repeat(self.dsk, times),
            cpu=np.repeat(self.cpu, times),
            su=np.repeat(self.su, times),
            res=np.repeat(self.res, times),
            load=np.repeat(self.load, times, axis=0),
        )


_Part = tuple[Floats, Floats, Floats]  # per row: d1, d2 of each value; scalar


class _Step:
    """One step's arrays: per movable instance (rows) and node (columns)."""

    def __init__(self, es: ExactSearch) -> None:
        self.es = es
        self.a = es.arrays
        self.w = es.w
        self.p = np.array(self.w.p, dtype=np.int64)[es.idx]
        self.s = np.array(self.w.s, dtype=np.int64)[es.idx]
        self.n_nodes = len(self.w.names)
        self.loads = np.array(self.w.loads, dtype=np.float64).reshape(self.n_nodes, 4)
        st, ls = es.deltas.stats, es.deltas.load_stats
        # the scored values: the metrics but those the loads replace, then
        # (with utilisation weights) the loads
        util = self.w.util
        self.m_sel = [m for m in range(NM) if not (util and m in LOAD_METRICS)]
        sel = self.m_sel
        self.weight = np.array([M_WEIGHT[m] for m in sel] + list(LOAD_WEIGHT if util else ()))
        self.center = np.array([st.center[m] for m in sel] + (ls.center if util else []))
        self.vn = np.array([es.deltas.vn[m] for m in sel] + (ls.vn if util else []))
        self.std = np.array([st.std[m] for m in sel] + (ls.std if util else []))
        self.n = st.n
        self.f = _Figs(es.run, es.stop, es.dsk, es.cpu, es.su, es.res, es.load)

    def table(self) -> _Table:
        """Every candidate's exact delta, rules aside (but the target's)."""
        a, f, p, s = self.a, self.f, self.p, self.s
        n_nodes, rows = self.n_nodes, p.size
        fr = f.repeat(n_nodes)
        big_p, big_s = np.repeat(p, n_nodes), np.repeat(s, n_nodes)
        big_t = np.tile(np.arange(n_nodes, dtype=np.int64), rows)
        r_mem = a.r_mem

        def wide(part: _Part) -> _Part:
            return (
                np.repeat(part[0], n_nodes, axis=0),
                np.repeat(part[1], n_nodes, axis=0),
                np.repeat(part[2], n_nodes),
            )

        s_drop = self._node(s, f, pri=0, sec=-1, new_r=self._dec(s, p, f))
        s_up = self._node(s, f, pri=1, sec=-1, new_r=self._dec(s, p, f))
        p_gone = self._node(p, f, pri=-1, sec=0, new_r=r_mem[p])
        t_pri = self._node(big_t, fr, pri=1, sec=0, new_r=r_mem[big_t])
        fo = self._total(
            [self._node(p, f, pri=-1, sec=1, new_r=self._inc(r_mem[p], p, s, f)), s_up]
        )
        rs = self._total(
            [
                wide(s_drop),
                self._node(
                    big_t, fr, pri=0, sec=1, new_r=self._inc(r_mem[big_t], big_t, big_p, fr)
                ),
            ]
        )
        fr_ = self._total(
            [
                wide(p_gone),
                wide(s_up),
                self._node(
                    big_t, fr, pri=0, sec=1, new_r=self._inc(r_mem[big_t], big_t, big_s, fr)
                ),
            ]
        )
        rf = self._total(
            [
                self._node(
                    big_p, fr, pri=-1, sec=1, new_r=self._inc(r_mem[big_p], big_p, big_t, fr)
                ),
                wide(s_drop),
                t_pri,
            ]
        )
        moved = self._inc(self._dec(big_s, big_p, fr), big_s, big_t, fr)
        rp = self._total([wide(p_gone), self._node(big_s, fr, pri=0, sec=0, new_r=moved), t_pri])
        # the primary's move: exclusion tags and locations
        eid = self.es.eid
        to_s = a.tags_moved(eid, p, s)
        to_t = a.tags_moved(eid, p, None)
        if self.w.has_locs:
            loc_t = a.loc_excl_moved(self.w, eid, p)
            to_s = to_s + np.take_along_axis(loc_t, s[:, None], axis=1)[:, 0]
            to_t = to_t + loc_t
            before = np.where(a.online[p], a.loc_n[p, s], 0)
            fo = fo + W_LOC * (np.where(a.online[s], a.loc_n[s, p], 0) - before)
            bp, bs, bt = big_p, big_s, big_t
            b = np.repeat(before, n_nodes)
            rs = rs + W_LOC * (np.where(a.online[bp], a.loc_n[bp, bt], 0) - b)
            fr_ = fr_ + W_LOC * (np.where(a.online[bs], a.loc_n[bs, bt], 0) - b)
            rf = rf + W_LOC * (np.where(a.online[bt], a.loc_n[bt, bp], 0) - b)
            rp = rp + W_LOC * (np.where(a.online[bt], a.loc_n[bt, bs], 0) - b)
        if self.w.has_dsrd:
            # desired locations: the new primary's misses less the old one's
            miss = self.es.missed()
            rows_ = np.arange(p.size)
            to_t = to_t + (miss - miss[rows_, p][:, None])
            to_s = to_s + (miss[rows_, s] - miss[rows_, p])
        fo = fo + to_s
        fr_ = fr_ + np.repeat(to_s, n_nodes)
        rf = rf + to_t.ravel()
        rp = rp + to_t.ravel()
        # targets that cannot be: the instance's own nodes, unusable ones, too little disk
        bad = (big_t == big_p) | (big_t == big_s) | ~a.usable[big_t] | (a.f_dsk[big_t] < fr.dsk)
        inst = self.es.idx
        big_i = np.repeat(inst, n_nodes)
        deltas = [fo] + [np.where(bad, math.inf, x) for x in (rs, fr_, rf, rp)]
        return _Table(
            delta=np.concatenate(deltas),
            inst=np.concatenate([inst, big_i, big_i, big_i, big_i]),
            new_p=np.concatenate([s, big_p, big_s, big_t, big_t]),
            new_s=np.concatenate([p, big_t, big_t, big_p, big_s]),
        )

    # ------------------------------------------------------------ node changes

    def _dec(self, k: Ints, peer: Ints, f: _Figs) -> Ints:
        """Node k's reservation once peer reserves the instance's less
        (`Work.new_r`)."""
        a = self.a
        cur = a.res[peer, k]
        hit = (f.res != 0) & (cur == a.r_mem[k])
        return np.where(hit, np.maximum(cur - f.res, a.r2[k]), a.r_mem[k])

    def _inc(self, r: Ints, k: Ints, peer: Ints, f: _Figs) -> Ints:
        """Reservation r once peer reserves the instance's more on node k."""
        out: Ints = np.maximum(r, self.a.res[peer, k] + f.res)
        return out

    def _node(self, k: Ints, f: _Figs, *, pri: int, sec: int, new_r: Ints) -> _Part:
        """Per row: node k's d1 and d2 of each scored value (the loads after
        the metrics) and its scalar change, when it gains (+1) or loses (-1)
        the instance's primary (`pri`) and secondary (`sec`)."""
        a = self.a
        hold = pri + sec
        zero = np.zeros_like(k)
        new, old, scalar = node_changes(
            a,
            k,
            -pri * f.run,
            pri * f.stop,
            -hold * f.dsk,
            pri * f.cpu,
            hold * f.su,
            pri + zero,
            sec + zero,
            new_r,
        )
        if self.w.util:
            old_l = self.loads[k]
            new_l = old_l + np.array([pri, pri, hold, pri], dtype=np.float64) * f.load
            new = np.concatenate([new[:, self.m_sel], new_l], axis=1)
            old = np.concatenate([old[:, self.m_sel], old_l], axis=1)
        ch = (new != old) & a.online[k][:, None]
        with np.errstate(all="ignore"):
            d1 = np.where(ch, new - old, 0.0)
            # (new - c)^2 - (old - c)^2
            d2 = d1 * ((new + old) - 2.0 * self.center)
        return d1, d2, scalar

    def _total(self, parts: list[_Part]) -> Floats:
        """The score's change from the nodes' parts (summed, the standard
        deviations rebuilt)."""
        d1, d2, sc = parts[0]
        for x in parts[1:]:
            d1, d2, sc = d1 + x[0], d2 + x[1], sc + x[2]
        n = self.n
        with np.errstate(all="ignore"):
            var = (self.vn + d2) / n - (d1 / n) * (d1 / n)
            term = self.weight * np.where(var > 0.0, np.sqrt(var), 0.0) - self.weight * self.std
        term = np.where((d1 == 0.0) & (d2 == 0.0), 0.0, term)
        out: Floats = term.sum(axis=-1) + sc
        return out
