"""hbal's greedy step, made fast: at the current placement, every candidate move
(instance, move kind, target node) whose lower bound can come within the cost
tolerance of the best delta found is scored exactly, own sides and targets visited
best bound first (`Search.best`); copy-taking candidates are scored at every node
at once (`Search._copy_deltas`). The result is the one of scoring every
candidate. Also what the search keeps from step to step (the `Sides`, the
`NodeArrays`, the `Own` sides) and refreshes only for the nodes a move changed
(own sides in batches, `reactors.balance_batch`, which also gives every step's
exact own parts), and the choice among near-equal candidates (`choose`).

Pure: no I/O, no logging, no asyncio; it reads the `Work`, never changes it
(`reactors.balance_plan` applies the chosen move). Comes after
`reactors.balance_bounds` (the visiting order), `reactors.balance_deltas` (exact
deltas) and `reactors.balance_sides`; each step's candidates go to
`reactors.balance_plan`, whose chosen moves `reactors.balance_fold` simplifies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reactors.balance_arrays import Floats, NodeArrays
from reactors.balance_batch import Exacts, Figures, own_sides
from reactors.balance_bounds import Bounds
from reactors.balance_deltas import Deltas
from reactors.balance_moves import KIND_ORDER, MoveKind
from reactors.balance_sides import (
    FAMILY,
    NSLOT,
    SEC,
    SEC_KINDS,
    SLOTS,
    Own,
    Sides,
)
from reactors.balance_work import M_WEIGHT, NM, W_LOC, W_N1, W_RTOTAL, Inst, Work

# Margin kept between a bound and the delta it must beat (float rounding).
_MARGIN = 1e-9
# The least gain a move must have to be a candidate at all.
_EPS = 1e-9
# Copy-taking own sides whose candidates are scored together (`_copy_deltas`).
_CHUNK = 128
# Replace-secondary's slot in `SLOTS` (its family's other kind: failover-and-replace).
_LS_SLOT = SLOTS.index(MoveKind.REPLACE_SECONDARY)


@dataclass(frozen=True, slots=True)
class Cand:
    """A scored candidate: its delta, data copied, live migrations, kind, instance
    and new (primary, secondary)."""

    delta: float
    data: int
    migrations: int
    kind: MoveKind
    inst: int
    new_p: int
    new_s: int


class Search:
    """hbal's greedy step over the working model: every instance, move kind and
    target, scored exactly where its bound can reach the best delta (`best`)."""

    def __init__(self, work: Work) -> None:
        self.w = work
        self.deltas = Deltas(work)
        self.scored = 0
        self.best_delta = -_EPS
        self.keep = 1.0
        self.tol = 0.0
        self.pool: list[Cand] = []
        self.owns: dict[int, Own] = {}
        # per copy-taking own side (its row): every node's delta and whether it can
        # take the copy, for this step (`_copy_deltas`)
        self.copies: dict[int, tuple[list[float], list[bool], int]] = {}
        self.ex: Exacts  # the step's exact own parts (`best`)
        n_nodes = len(work.names)
        self.targets = [k for k in range(n_nodes) if work.usable[k]]
        # kept from step to step, refreshed for the nodes whose figures changed
        # (`Work.version`) and the instances with a copy on them (`by_node`)
        self.sides = Sides(len(work.insts))
        self.arrays = NodeArrays(work)
        self.by_node: list[set[int]] = [set() for _ in range(n_nodes)]
        # each own side's nodes and r_s_less, by instance (for `Exacts`)
        n_inst = len(work.insts)
        self.own_p = np.zeros(n_inst, dtype=np.int64)
        self.own_s = np.zeros(n_inst, dtype=np.int64)
        self.own_rsl = np.zeros(n_inst, dtype=np.int64)
        self.own_rp = np.zeros(n_inst, dtype=np.int64)
        self.figs = Figures(work)
        for i in range(len(work.insts)):
            if work.movable[i]:
                self.by_node[work.p[i]].add(i)
                self.by_node[work.s[i]].add(i)

    def best(self, *, tolerance: float) -> list[Cand]:
        """Every candidate within `tolerance` of the best gain (the best first).

        Each candidate is (the instance's own side, a target node; none for a
        failover). Its delta is bounded from below by the sum of a bound per side
        (`Bounds`); own sides are visited in the order of their best possible
        bound, their targets in the order of theirs, and a visit stops once no
        further candidate can get within `tolerance` of the best gain found so
        far. What is visited is scored exactly, so the result is the one of
        scoring every candidate."""
        w = self.w
        self.deltas.start()
        self.best_delta = -_EPS
        self.keep = 1 - tolerance
        self.tol = tolerance
        self.pool = []
        self.copies = {}
        self._refresh()
        ends = (self.own_p, self.own_s, self.own_rsl, self.own_rp)
        self.ex = Exacts(w, self.deltas.stats, self.deltas.vn, ends, self.figs)
        bounds = Bounds(w, self.deltas.stats, self.sides, self.arrays, self.targets)
        rows, keys, lbs, firsts = bounds.rows, bounds.key, bounds.lb, bounds.first
        owns = self.owns
        keep = self.keep
        evaluators = {
            MoveKind.FAILOVER: self._eval_fo,
            MoveKind.REPLACE_AND_FAILOVER: self._eval_rf,
            MoveKind.REPLACE_PRIMARY: self._eval_rp,
        }
        for pos, r in enumerate(rows):
            cutoff = self.best_delta * keep + _MARGIN
            if keys[r] >= cutoff:
                break
            lb_o = lbs[r]
            if lb_o + firsts[r] >= cutoff:
                continue
            own = owns[r // NSLOT]
            kind = SLOTS[r % NSLOT]
            tl = bounds.targets_of(r)
            if kind in SEC_KINDS:
                deltas = self.copies.get(r)
                if deltas is None:
                    ahead = [q for q in rows[pos : pos + 4 * _CHUNK] if FAMILY[q % NSLOT] == SEC]
                    self._copy_deltas(ahead[:_CHUNK])
                    deltas = self.copies[r]
                self._scan_copy(own, kind, lb_o, tl, deltas)
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
            cand = Cand(d, data, migrations, kind, i, new_p, new_s)
            self.best_delta = self._push(self.pool, cand, self.best_delta, self.tol)

    def _refresh(self) -> None:
        """Bring the node arrays and the own sides up to the current placement:
        only the nodes whose figures changed since the last step (the two to four
        the last move touched) and the instances with a copy on one of them."""
        w = self.w
        redo: set[int] = set()
        for k in self.arrays.refresh(w):
            redo |= self.by_node[k]
        if not redo:
            return
        owns, r_ps = own_sides(w, self.sides, sorted(redo), self.figs)
        for own, r_p in zip(owns, r_ps, strict=True):
            i = own.i
            self.own_rp[i] = r_p
            old = self.owns.get(i)
            if old is not None:
                self.by_node[old.p].discard(i)
                self.by_node[old.s].discard(i)
            self.by_node[own.p].add(i)
            self.by_node[own.s].add(i)
            self.owns[i] = own
            self.own_p[i], self.own_s[i], self.own_rsl[i] = own.p, own.s, own.r_s_less

    def _eval_fo(self, own: Own, _t: int) -> None:
        """failover: (s, p)."""
        p, s = own.p, own.s
        if self.w.tags_clash(own.i, s):
            return
        d = (
            self.ex.fo[own.i]
            + self.deltas.tags_delta(own.inst, p, s)
            + self.deltas.loc_delta(p, s, s, p)
        )
        self._consider(d, 0, 1, MoveKind.FAILOVER, own.i, s, p)

    def _scan_copy(
        self,
        own: Own,
        kind: MoveKind,
        lb_o: float,
        tl: list[tuple[float, int]],
        deltas: tuple[list[float], list[bool], int],
    ) -> None:
        """Replace-secondary (p, t) or failover-and-replace (s, t), over the
        targets `tl` (lowest bound first) until no further bound can get within
        the tolerance of the best gain; `deltas`: every node's exact delta and
        whether it can take the copy (`_copy_deltas`)."""
        if kind is MoveKind.REPLACE_SECONDARY:
            if not own.p_n1_ok:
                return
            peer, migrations = own.p, 0
        else:
            if not own.s_pri_ok or self.w.tags_clash(own.i, own.s):
                return
            peer, migrations = own.s, 1
        ds, oks, at = deltas
        dsk = own.inst.dsk
        keep = self.keep
        best = self.best_delta
        limit = best * keep  # as `best_delta * keep`, redone when best_delta changes
        cutoff = limit + _MARGIN
        scored = 0
        for lb_t, t in tl:
            if lb_o + lb_t >= cutoff:
                break
            if not oks[at + t]:
                continue
            d = ds[at + t]
            scored += 1
            if d < limit:
                cand = Cand(d, dsk, migrations, kind, own.i, peer, t)
                best = self.best_delta = self._push(self.pool, cand, best, self.tol)
                limit = best * keep
                cutoff = limit + _MARGIN
        self.scored += scored

    def _copy_deltas(self, rows: list[int]) -> None:
        """The exact delta of every candidate of the given copy-taking own sides
        (replace-secondary, failover-and-replace), at every node at once, and
        whether the node can take the copy; what `Deltas.node_delta` and `combine` give
        candidate by candidate, operation for operation."""
        w = self.w
        a = self.arrays
        st = self.deltas.stats
        ex = self.ex
        owns = self.owns
        tags_delta = self.deltas.tags_delta
        at = np.array(rows, dtype=np.int64)
        idx = at // NSLOT
        is_ls = at % NSLOT == _LS_SLOT
        tags = [
            0.0 if ls else tags_delta(owns[i].inst, owns[i].p, owns[i].s)
            for i, ls in zip(idx.tolist(), is_ls.tolist(), strict=True)
        ]
        base = np.where(is_ls[:, None], ex.ls[idx], ex.fr[idx])
        sc0 = np.where(is_ls, ex.sc_ls_a[idx], ex.sc_fr_a[idx] + np.array(tags, dtype=np.float64))
        p, s = self.own_p[idx], self.own_s[idx]
        peer = np.where(is_ls, p, s)
        loc = np.zeros(len(rows))
        if w.has_locs:
            for j, i in enumerate(idx.tolist()):
                own = owns[i]
                if w.online[own.p]:
                    # `loc_delta`: the new pair never shares a location
                    loc[j] = W_LOC * (0 - len(w.locs[own.p] & w.locs[own.s]))
        dsk, su, res = ex.dsk[idx], ex.su[idx], ex.res[idx]
        with np.errstate(all="ignore"):
            every = np.arange(len(w.names))
            r_new = np.maximum(a.r_mem, a.res[peer] + res[:, None])
            ok = (
                (every != p[:, None])
                & (every != s[:, None])
                & (a.f_dsk >= dsk[:, None])
                & (r_new <= a.c_free)
            )
            if a.loc is not None:
                ok &= ~a.loc[peer]
            isp = a.ispind + su[:, None]
            t_dsk, sden = a.t_dsk, a.sden
            # the node's values that taking a copy changes (`node_values`)
            new: dict[int, Floats] = {
                2: np.where(t_dsk == 0, 1.0, (a.f_dsk - dsk[:, None]) / t_dsk),
                3: r_new / a.t_mem,
                6: (a.n_all + 1).astype(np.float64),
                7: np.where(sden != 0, isp / sden, np.where(isp == 0, math.nan, math.inf)),
            }
            vals = a.vals
            center, std, n = st.center, st.std, st.n
            out: Floats | float = 0.0
            for m in range(NM):
                d1: Floats = base[:, 2 * m, None]
                d2: Floats = base[:, 2 * m + 1, None]
                nv = new.get(m)
                if nv is not None:
                    ov = vals[:, m]
                    cm = center[m]
                    changed = nv != ov
                    d1 = d1 + np.where(changed, nv - ov, 0.0)
                    d2 = d2 + np.where(changed, (nv - cm) * (nv - cm) - (ov - cm) * (ov - cm), 0.0)
                var = (self.deltas.vn[m] + d2) / n - (d1 / n) * (d1 / n)
                term = M_WEIGHT[m] * (np.where(var > 0.0, np.sqrt(var), 0.0) - std[m])
                out = out + np.where((d1 == 0.0) & (d2 == 0.0), 0.0, term)
            scalar = W_RTOTAL * (new[3] - vals[:, 3])
            fail_old = a.f_mem < a.r_mem
            fail_new = a.f_mem < r_new
            n1 = (a.n_all + 1) * fail_new - a.n_all * fail_old
            scalar = np.where(fail_old | fail_new, scalar + W_N1 * n1, scalar)
            d = (sc0[:, None] + scalar) + out + loc[:, None]
        # one flat list per chunk (row j's nodes from j * nodes on)
        ds: list[float] = d.ravel().tolist()
        oks: list[bool] = ok.ravel().tolist()
        for j, r in enumerate(rows):
            self.copies[r] = (ds, oks, j * len(w.names))

    def _t_pri_ok(self, inst: Inst, t: int) -> bool:
        """t can become the primary: disk, memory, vCPU ratio, its own N+1."""
        w = self.w
        return (
            w.f_dsk[t] >= inst.dsk
            and w.c_free[t] - inst.mem >= w.r_mem[t]
            and w.all_vcpus[t] + inst.all_vcpus <= w.vcpu_limit[t]
        )

    def _eval_rf(self, own: Own, t: int) -> None:
        """replace-and-failover: (t, p)."""
        w = self.w
        inst, p, s = own.inst, own.p, own.s
        if not own.p_n1_ok or not self._t_pri_ok(inst, t) or w.tags_clash(own.i, t):
            return
        if w.has_locs and w.locs[p] & w.locs[t]:
            return
        r_p = w.new_r(p, -1, 0, t, inst.res)
        if w.online[p] and r_p > w.c_free[p] + inst.mem:
            return
        acc: list[float] = self.ex.ls[own.i].tolist()
        sc = self.ex.sc_ls[own.i] + self.deltas.node_delta(
            p, inst.run_mem, -inst.stop_mem, 0, -inst.vcpus, 0, -1, 1, r_p, acc
        )
        sc += self.deltas.node_delta(
            t, -inst.run_mem, inst.stop_mem, -inst.dsk, inst.vcpus, inst.su, 1, 0, w.r_mem[t], acc
        )
        d = (
            sc
            + self.deltas.combine(acc)
            + self.deltas.tags_delta(inst, p, t)
            + self.deltas.loc_delta(p, s, t, p)
        )
        self._consider(d, inst.dsk, 1, MoveKind.REPLACE_AND_FAILOVER, own.i, t, p)

    def _eval_rp(self, own: Own, t: int) -> None:
        """replace-primary: (t, s)."""
        w = self.w
        inst, p, s = own.inst, own.p, own.s
        if not own.s_pri_ok or not self._t_pri_ok(inst, t):
            return
        if w.tags_clash(own.i, t) or w.tags_clash(own.i, s):
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
        acc: list[float] = self.ex.lp[own.i].tolist()
        sc = self.ex.sc_lp[own.i] + self.deltas.node_delta(s, 0, 0, 0, 0, 0, 0, 0, r_s, acc)
        sc += self.deltas.node_delta(
            t, -inst.run_mem, inst.stop_mem, -inst.dsk, inst.vcpus, inst.su, 1, 0, r_t, acc
        )
        d = (
            sc
            + self.deltas.combine(acc)
            + self.deltas.tags_delta(inst, p, t)
            + self.deltas.loc_delta(p, s, t, s)
        )
        self._consider(d, inst.dsk, 2, MoveKind.REPLACE_PRIMARY, own.i, t, s)

    @staticmethod
    def _push(pool: list[Cand], cand: Cand, best: float, tolerance: float) -> float:
        pool.append(cand)
        if cand.delta < best:
            best = cand.delta
            limit = best * (1 - tolerance)
            pool[:] = [c for c in pool if c.delta <= limit]
        return best


def choose(cands: list[Cand], names: list[str], insts: list[Inst]) -> Cand:
    """Among near-equal gains: least data copied, fewest migrations, then names."""
    return min(
        cands,
        key=lambda c: (
            c.data,
            c.migrations,
            KIND_ORDER[c.kind],
            insts[c.inst].name,
            names[c.new_p],
            names[c.new_s],
        ),
    )
