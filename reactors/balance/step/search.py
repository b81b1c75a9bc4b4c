"""hbal's greedy step, made fast: at the current placement, every candidate move
(instance, move kind, target node) whose lower bound can come within the cost
tolerance of the best delta found is scored exactly, own sides and targets visited
best bound first (`Search.best`); copy- and primary-taking candidates are scored
at every node at once, for the next own sides of their family the visit can
still reach (`Search._copy_deltas`, `Search._pri_deltas`), and failovers for
every instance at once (`Search._failovers`); a new primary that would join one
sharing an exclusion tag is never a candidate (`Work.tags_clash`). The result is
the one of scoring every candidate (with `top`, its first `top` distinct moves,
which is all the lookahead weighs). Also what the search keeps from step to step
(the `Sides`, the `NodeArrays`, the own sides (`OwnSide`) and their node changes) and
refreshes only for the nodes a move changed (own sides in batches,
`reactors.balance.step.batch`, which also gives every step's exact own parts), and
the choice among near-equal candidates (`choose`).

Pure: no I/O, no logging, no asyncio; it reads the `Work`, never changes it
(`reactors.balance.plan` applies the chosen move).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np

from reactors.balance.moves import KIND_ORDER, MIGRATIONS, MoveKind
from reactors.balance.step.arrays import Bools, Floats, NodeArrays
from reactors.balance.step.batch import ExactParts, Figures, own_changes, own_sides
from reactors.balance.step.bounds import Bounds
from reactors.balance.step.deltas import Change, Copies, Deltas, Primaries
from reactors.balance.step.sides import (
    FAMILY,
    NSLOT,
    PRI,
    SEC,
    SEC_KINDS,
    SLOTS,
    OwnSide,
    Sides,
)
from reactors.balance.work import NM, W_LOC, Work, WorkInstance

# Margin kept between a bound and the delta it must beat (float rounding).
_MARGIN = 1e-9
# The least gain a move must have to be a candidate at all.
_EPS = 1e-9
# Copy-taking own sides whose candidates are scored together (`_copy_deltas`).
_CHUNK = 128
# OwnSide sides whose own bounds are worked out together (`Bounds.block`).
_BLOCK = 256
# Replace-secondary's slot in `SLOTS` (its family's other kind: failover-and-replace).
_LS_SLOT = SLOTS.index(MoveKind.REPLACE_SECONDARY)
# Primary-taking own sides scored together (`_pri_deltas`), and replace-and-
# failover's slot (its family's other kind: replace-primary).
_PCHUNK = 64
_RF_SLOT = SLOTS.index(MoveKind.REPLACE_AND_FAILOVER)
# A chunk's deltas and whether the rules allow each, per row and node, and
# where one row's start (`Search._store`).
_Scores = tuple["array[float]", bytes, int]


@dataclass(frozen=True, slots=True)
class Candidate:
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
        # the delta a candidate must be below to be pooled (`_push`), and how
        # many distinct moves the pool must hold at most (0: no such limit)
        self.limit = -_EPS
        self.top = 0
        self.pool: list[Candidate] = []
        self.owns: dict[int, OwnSide] = {}
        # per family, per copy- or primary-taking own side (its row): every
        # node's delta and whether it can take its part, for this step
        # (`_copy_deltas`, `_pri_deltas`)
        self.scores: tuple[dict[int, _Scores], ...] = ({}, {}, {})
        self.ex: ExactParts  # the step's exact own parts (`best`)
        n_nodes = len(work.names)
        self.targets = [k for k in range(n_nodes) if work.usable[k]]
        # kept from step to step, refreshed for the nodes whose figures changed
        # (`Work.version`) and the instances with a copy on them (`own_p`, `own_s`)
        self.sides = Sides(len(work.insts))
        self.arrays = NodeArrays(work)
        # each own side's nodes and r_s_less, by instance (for `ExactParts`)
        n_inst = len(work.insts)
        self.own_p = np.zeros(n_inst, dtype=np.int64)
        self.own_s = np.zeros(n_inst, dtype=np.int64)
        self.own_rsl = np.zeros(n_inst, dtype=np.int64)
        self.own_rp = np.zeros(n_inst, dtype=np.int64)
        self.figs = Figures(work, self.arrays)
        # every instance's `own_changes`, kept from step to step
        self.own_ch: list[Change] = [
            (np.zeros((n_inst, NM)), np.zeros((n_inst, NM)), np.zeros(n_inst)) for _ in range(4)
        ]
        self.copy_tabs: Copies | None = None  # the step's (`_copy_deltas`)
        self.pri_tabs: Primaries | None = None  # the step's (`_pri_deltas`)
        # each instance's failover tag part and failover delta, for this step
        self.fo_tags = np.zeros(n_inst)
        self.fo_d: list[float] = []
        self.clash_s: list[bool] = []
        self.movable = np.array(work.movable, dtype=np.bool_)
        self.own_p[self.movable] = np.array(work.p)[self.movable]
        self.own_s[self.movable] = np.array(work.s)[self.movable]

    def best(self, *, tolerance: float, top: int = 0) -> list[Candidate]:
        """Every candidate within `tolerance` of the best gain (the best first);
        with `top` > 0, only those of them that come before the `top`-th distinct
        move (`move_key`), and that move's first one, where that is enough:
        the list's first `top` distinct moves are then the same, for a search
        that stops where no candidate can enter that shorter list.

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
        self.limit = self.best_delta * self.keep
        self.top = top
        self.pool = []
        self.scores = ({}, {}, {})
        self.copy_tabs = None
        self.pri_tabs = None
        self._refresh()
        ends = (self.own_p, self.own_s)
        self.ex = ExactParts(self.deltas.stats, self.deltas.vn, ends, self.own_ch, self.arrays)
        self._failovers()
        bounds = Bounds(w, self.deltas.stats, self.sides, self.arrays, self.targets)
        for start in range(0, len(bounds.rows), _BLOCK):
            if not self._visit(bounds, start):
                break
        limit = self.best_delta * self.keep
        return sorted(
            (c for c in self.pool if c.delta <= limit + 1e-12),
            key=lambda c: c.delta,
        )

    def _visit(self, bounds: Bounds, start: int) -> bool:
        """Visit the own sides at positions [start, start + _BLOCK) of the
        visiting order (`best`); False once no further one can come within the
        tolerance of the best delta."""
        rows = bounds.rows
        keys, lbs, firsts, kids = bounds.block(start, _BLOCK)
        owns = self.owns
        lists = bounds.lists
        fo_bound = bounds.fo_bound
        end = start + len(keys)
        for pos, r, key, lb_o, first, kid in zip(
            range(start, end), rows[start:end], keys, lbs, firsts, kids, strict=True
        ):
            cutoff = self.limit + _MARGIN
            if key >= cutoff:
                return False
            if lb_o + first >= cutoff:
                continue
            own = owns[r // NSLOT]
            slot = r % NSLOT
            kind = SLOTS[slot]
            if kind is MoveKind.FAILOVER:
                if lb_o + fo_bound < cutoff:
                    self._eval_fo(own)
                continue
            fam = FAMILY[slot]
            tl = lists[fam].get(kid)
            if tl is None:
                tl = bounds.targets_for(fam, kid)
            got = self.scores[fam].get(r)
            if got is None:
                # this side's and the next ones' of its family that can still
                # be visited (their bound is below the cutoff), scored together
                limit = max(int(np.searchsorted(bounds.key_at, cutoff)), pos + 1)
                chunk = _CHUNK if fam == SEC else _PCHUNK
                ahead = [
                    q for q in rows[pos : min(limit, pos + 4 * chunk)] if FAMILY[q % NSLOT] == fam
                ]
                if fam == SEC:
                    self._copy_deltas(ahead[:chunk])
                else:
                    self._pri_deltas(ahead[:chunk])
                got = self.scores[fam][r]
            self._scan(own, kind, lb_o, tl, got)
        return True

    def _consider(
        self, d: float, data: int, migrations: int, kind: MoveKind, i: int, new_p: int, new_s: int
    ) -> None:
        self.scored += 1
        if d < self.limit:
            self._push(Candidate(d, data, migrations, kind, i, new_p, new_s))

    def _refresh(self) -> None:
        """Bring the node arrays and the own sides up to the current placement:
        only the nodes whose figures changed since the last step (the two to four
        the last move touched) and the instances with a copy on one of them."""
        w = self.w
        changed = self.arrays.refresh(w)
        if not changed:
            return
        hit = np.zeros(len(w.names), dtype=np.bool_)
        hit[changed] = True
        redo = np.flatnonzero(self.movable & (hit[self.own_p] | hit[self.own_s]))
        if not redo.size:
            return
        idx = redo.tolist()
        owns, r_ps = own_sides(w, self.sides, idx, self.figs)
        self.owns.update(zip(idx, owns, strict=True))
        self.own_rp[redo] = r_ps
        self.own_p[redo] = [own.p for own in owns]
        self.own_s[redo] = [own.s for own in owns]
        self.own_rsl[redo] = [own.r_s_less for own in owns]
        ends = (self.own_p[redo], self.own_s[redo], self.own_rsl[redo], self.own_rp[redo])
        for full, part in zip(
            self.own_ch, own_changes(self.arrays, ends, self.figs, redo), strict=True
        ):
            for whole, rows in zip(full, part, strict=True):
                whole[redo] = rows

    def _failovers(self) -> None:
        """Every instance's failover tag part (`tags_delta(inst, p, s)`) and
        failover delta (`_eval_fo`'s), and whether its secondary has a primary
        sharing one of its exclusion tags (`Work.tags_clash(i, s)`: no failover,
        failover-and-replace or replace-primary), for this step."""
        w, a = self.w, self.arrays
        p, s = self.own_p, self.own_s
        on = a.online
        eid = a.excl_id
        self.clash_s = ((eid != 0) & on[p] & (a.tag1[eid, s] > 0)).tolist()
        if w.has_locs:
            moved = a.loc_excl_moved(w, eid, p)
            at_s = np.take_along_axis(moved, s[:, None], axis=1)[:, 0]
            tags = np.where(self.movable & (eid != 0), a.tags_moved(eid, p, s) + at_s, 0.0)
            before = np.where(on[p], a.loc_n[p, s], 0)
            after = np.where(on[s], a.loc_n[s, p], 0)
            loc: Floats | float = W_LOC * (after - before)
        else:
            tags = a.tags_moved(eid, p, s)
            loc = 0.0
        self.fo_tags = tags
        self.fo_d = ((self.ex.fo_a + tags) + loc).tolist()

    def _eval_fo(self, own: OwnSide) -> None:
        """failover: (s, p); its delta is the step's (`_failovers`)."""
        if self.clash_s[own.i]:
            return
        self._consider(self.fo_d[own.i], 0, 1, MoveKind.FAILOVER, own.i, own.s, own.p)

    def _scan(
        self,
        own: OwnSide,
        kind: MoveKind,
        lb_o: float,
        tl: tuple[list[float], list[int]],
        deltas: _Scores,
    ) -> None:
        """Replace-secondary (p, t), failover-and-replace (s, t),
        replace-and-failover (t, p) or replace-primary (t, s), over the targets
        `tl` (lowest bound first) until no further bound can get within the
        tolerance of the best gain; `deltas`: every node's exact delta and
        whether the move's rules let it take its part (`_copy_deltas`,
        `_pri_deltas`)."""
        if kind is MoveKind.REPLACE_SECONDARY or kind is MoveKind.REPLACE_AND_FAILOVER:
            if not own.p_n1_ok:
                return
            peer = own.p
        else:
            if not own.s_pri_ok or self.clash_s[own.i]:
                return
            peer = own.s
        migrations = MIGRATIONS[kind]
        copy = kind in SEC_KINDS
        ds, oks, at = deltas
        dsk = own.inst.dsk
        limit = self.limit  # redone when a candidate is pooled
        cutoff = limit + _MARGIN
        scored = 0
        for lb_t, t in zip(tl[0], tl[1], strict=True):
            if lb_o + lb_t >= cutoff:
                break
            if not oks[at + t]:
                continue
            d = ds[at + t]
            scored += 1
            if d < limit:
                if copy:
                    limit = self._push(Candidate(d, dsk, migrations, kind, own.i, peer, t))
                else:
                    limit = self._push(Candidate(d, dsk, migrations, kind, own.i, t, peer))
                cutoff = limit + _MARGIN
        self.scored += scored

    def _copy_deltas(self, rows: list[int]) -> None:
        """The exact delta of every candidate of the given copy-taking own sides
        (replace-secondary, failover-and-replace), at every node at once, and
        whether the node can take the copy (`reactors.balance.step.deltas.Copies`)."""
        w = self.w
        ex = self.ex
        owns = self.owns
        chunk = np.array(rows, dtype=np.int64)
        idx = chunk // NSLOT
        is_ls = chunk % NSLOT == _LS_SLOT
        base = np.where(is_ls[:, None], ex.ls[idx], ex.fr[idx])
        sc0 = np.where(is_ls, ex.sc_ls_a[idx], ex.sc_fr_a[idx] + self.fo_tags[idx])
        p, s = self.own_p[idx], self.own_s[idx]
        peer = np.where(is_ls, p, s)
        loc = np.zeros(len(rows))
        if w.has_locs:
            for j, i in enumerate(idx.tolist()):
                own = owns[i]
                if w.online[own.p]:
                    # the location part: the new pair never shares a location
                    loc[j] = W_LOC * (0 - len(w.locs[own.p] & w.locs[own.s]))
        cp = self.copy_tabs
        if cp is None:
            cp = self.copy_tabs = Copies(
                self.arrays, self.deltas.stats, self.deltas.vn, self.figs.copy_u
            )
        dsk_at, su_at, res_at = self.figs.copy_at
        at = (dsk_at[idx], su_at[idx], peer * cp.n_res + res_at[idx], p, s)
        d, ok = cp.deltas(base, sc0, loc, at)
        self._store(SEC, rows, d, ok)

    def _pri_deltas(self, rows: list[int]) -> None:
        """The exact delta of every candidate of the given primary-taking own
        sides (replace-and-failover, replace-primary), at every node at once,
        and whether the move's rules let the node take the primary
        (`reactors.balance.step.deltas.Primaries`, with the tag and location parts)."""
        w, a, ex, figs = self.w, self.arrays, self.ex, self.figs
        chunk = np.array(rows, dtype=np.int64)
        idx = chunk // NSLOT
        rf = chunk % NSLOT == _RF_SLOT  # else replace-primary
        p, s = self.own_p[idx], self.own_s[idx]
        res, mem, dsk = figs.res[idx], figs.mem[idx], figs.dsk[idx]
        # the node keeping a copy (rf: p, the new secondary; rp: s) and its
        # reserved memory once the new primary t is its peer (`Work.new_r`)
        k = np.where(rf, p, s)
        r_k = np.maximum(
            np.where(rf, a.r_mem[p], self.own_rsl[idx])[:, None], a.res[:, k].T + res[:, None]
        )
        own = (
            k,
            np.where(rf, figs.run[idx], 0),
            np.where(rf, -figs.stop[idx], 0),
            np.where(rf, -figs.cpu[idx], 0),
            np.where(rf, -1, 0),
            np.where(rf, 1, 0),
            r_k,
        )
        tabs = self.pri_tabs
        if tabs is None:
            tabs = self.pri_tabs = Primaries(a, self.deltas.stats, self.deltas.vn, figs.pri_u)
        at = tuple(x[idx] for x in figs.pri_at)
        base = np.where(rf[:, None], ex.ls[idx], ex.lp[idx])
        sc0 = np.where(rf, ex.sc_ls_a[idx], ex.sc_lp_a[idx])
        d = tabs.deltas(base, sc0, own, (at[0], at[1], at[2], at[3], at[4]))
        on = a.online
        if w.has_locs:
            eid = a.excl_id[idx]
            tags = a.tags_moved(eid, p, None) + np.where(
                (eid == 0)[:, None], 0.0, a.loc_excl_moved(w, eid, p)
            )
            before = np.where(on[p], a.loc_n[p, s], 0)[:, None]
            after = np.where(on[None, :], a.loc_n[:, k].T, 0)
            loc: Floats | float = W_LOC * (after - before)
        else:
            tags = a.tags_moved(a.excl_id[idx], p, None)
            loc = 0.0
        d = (d + tags) + loc
        every_n = np.arange(len(w.names))
        with np.errstate(all="ignore"):
            ok = (
                (every_n != p[:, None])
                & (every_n != s[:, None])
                & a.usable
                & (a.f_dsk >= dsk[:, None])
                # the spindle-ratio policy (htools' hiSpindles)
                & (a.ispind + figs.su[idx][:, None] <= a.spin_cap)
                & (a.c_free - mem[:, None] >= a.r_mem)
                & (a.all_vcpus + figs.all_vcpus[idx][:, None] <= a.vcpu_limit)
                # the node keeping the copy keeps N+1
                & ~(on[k][:, None] & (r_k > np.where(rf, a.c_free[p] + mem, a.c_free[s])[:, None]))
                # replace-primary: t, the replace's new secondary, takes s as its peer
                & (rf[:, None] | (np.maximum(a.r_mem, a.res[s] + res[:, None]) <= a.c_free))
                # anti-affinity: t has no primary sharing an exclusion tag
                # (`Work.tags_clash`; none of the instance's when it has none)
                & ~((a.tag1[a.excl_id[idx]] > 0) & on[p][:, None])
            )
            if a.loc is not None:
                ok &= ~a.loc[k]
        self._store(PRI, rows, d, ok)

    def _store(self, fam: int, rows: list[int], d: Floats, ok: Bools) -> None:
        """Keep the chunk's deltas and rules, one flat sequence each (row j's
        nodes from j * nodes on; read element by element, so as an `array` of
        floats and bytes rather than lists)."""
        ds = array("d", np.ascontiguousarray(d, dtype=np.float64).tobytes())
        oks = np.ascontiguousarray(ok, dtype=np.bool_).tobytes()
        width = d.shape[1]
        self.scores[fam].update((r, (ds, oks, j * width)) for j, r in enumerate(rows))

    def _push(self, cand: Candidate) -> float:
        """Pool a candidate below `limit`; the new limit: the best delta within
        the tolerance and, with `top`, below the `top`-th distinct move's delta
        once the pool has that many (a later candidate of equal delta would
        come after it in `best`'s stable sort)."""
        pool = self.pool
        pool.append(cand)
        if cand.delta < self.best_delta:
            self.best_delta = cand.delta
            self.limit = cand.delta * self.keep
            limit = self.limit
            pool[:] = [c for c in pool if c.delta <= limit]
        if self.top:
            kth = _kth_distinct(pool, self.top)
            if kth < self.limit:
                self.limit = kth
                pool[:] = [c for c in pool if c.delta <= kth]
        return self.limit


def move_key(cand: Candidate) -> tuple[int, int, int]:
    """The move a candidate makes (one move can be listed under two kinds)."""
    return (cand.inst, cand.new_p, cand.new_s)


def _kth_distinct(pool: list[Candidate], k: int) -> float:
    """The delta of the `k`-th distinct move in `pool`, in `best`'s order (by
    delta, then pooling order); +inf when it holds fewer."""
    seen: set[tuple[int, int, int]] = set()
    for cand in sorted(pool, key=lambda c: c.delta):
        key = move_key(cand)
        if key not in seen:
            seen.add(key)
            if len(seen) == k:
                return cand.delta
    return math.inf


def choose(cands: list[Candidate], names: list[str], insts: list[WorkInstance]) -> Candidate:
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


# hbal's order of the moves it tries for one instance towards one target node
# (Ganeti's `possibleMoves`); a failover comes before every one of them.
_HBAL_KIND = {
    MoveKind.REPLACE_SECONDARY: 0,
    MoveKind.REPLACE_AND_FAILOVER: 1,
    MoveKind.REPLACE_PRIMARY: 2,
    MoveKind.FAILOVER_AND_REPLACE: 3,
}


def hbal_position(c: Candidate) -> tuple[int, int, int]:
    """Where hbal's step meets the candidate: instances in the file's order, for
    each its failover first, then target nodes in the file's order, for each
    the move kinds in `_HBAL_KIND`'s order. hbal keeps the first of equal
    scores (`compareTables`), so among ties the lowest position is its pick."""
    if c.kind is MoveKind.FAILOVER:
        return (c.inst, -1, 0)
    by_secondary = c.kind in (MoveKind.REPLACE_SECONDARY, MoveKind.FAILOVER_AND_REPLACE)
    target = c.new_s if by_secondary else c.new_p
    return (c.inst, target, _HBAL_KIND[c.kind])


def choose_as_hbal(cands: list[Candidate]) -> Candidate:
    """hbal's pick among candidates of equal gain (`best` with `TIE`): the
    first it meets (`hbal_position`)."""
    return min(cands, key=hbal_position)


# Gains this close (relative) are equal: float rounding apart, the same score.
TIE = 1e-9
