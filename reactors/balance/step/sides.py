"""Each movable instance's own side of its candidate moves: which move kinds its
two nodes allow (memory, vCPU ratio, N+1 on the nodes it leaves or swaps), and per
kind the parts of its lower bound that do not depend on the cluster-wide means
(`own_side`, `coef`), with the key its targets are tabulated by; and every own
side's parts as array rows (`Sides`), kept from step to step and rewritten only
for the instances on the nodes a move changed, with the keys' figures as arrays
(`Sides.key_figures`) and each instance's key ids (`Sides.kid_of`). `own_side`, `coef` and
`Sides.put` define one instance's rows; the search computes them for all the
instances a move made stale at once (`reactors.balance.step.batch`, operation for
operation). The planner never calls `own_side`, `coef`, `_cf`, `_rem_range` or
`Sides.put`: they are the readable reference the batch must reproduce, and
`tests/unit/balance/test_balance_batch.py` checks it against them bit for bit.

Pure: no I/O, no logging, no asyncio; it reads the `Work`, never changes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reactors.balance.moves import MoveKind
from reactors.balance.step.arrays import Ints
from reactors.balance.work import (
    NM,
    W_LOC,
    W_LOC_EXCL,
    W_TAGS,
    Work,
    WorkInstance,
)

# The kinds whose target takes only a copy (the others' target takes the primary).
SEC_KINDS = frozenset({MoveKind.REPLACE_SECONDARY, MoveKind.FAILOVER_AND_REPLACE})
# An instance's own sides, one row each in `Sides`, in the order `own_side`
# lists them; the family each belongs to (its targets take nothing, a copy, or the
# primary and a copy).
SLOTS = (
    MoveKind.FAILOVER,
    MoveKind.FAILOVER_AND_REPLACE,
    MoveKind.REPLACE_SECONDARY,
    MoveKind.REPLACE_AND_FAILOVER,
    MoveKind.REPLACE_PRIMARY,
)
NSLOT = len(SLOTS)
SLOT = {k: n for n, k in enumerate(SLOTS)}
FO, SEC, PRI = 0, 1, 2
FAMILY = (FO, SEC, SEC, PRI, PRI)
# `Sides.key_figures`' column for a primary-taking key's memory (run + stop).
KEY_MEM = -1

# A side's parts, independent of the current means: per metric the change of the
# values (d1) and of their squares (q), p_rem of one node taken over a range
# (old value, low, high) or None, and the scalar's lower bound.
CSide = tuple[list[float], list[float], tuple[float, float, float] | None, float]

# An own side's parts that do not depend on the current means: per metric the
# low's and the high's constant term and their common slope in the metric's mean,
# the p_rem range (added at the current mean) and the scalar.
Coef = tuple[list[float], list[float], list[float], tuple[float, float, float] | None, float]


@dataclass(slots=True, kw_only=True)
class OwnSide:
    """One instance's own side, kept while its nodes are unchanged."""

    i: int
    inst: WorkInstance
    p: int
    s: int
    p_n1_ok: bool
    s_pri_ok: bool  # s can take the primary without this instance's reservation
    r_s_less: int


def target_keys(inst: WorkInstance, excl_id: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """What a target's side of a copy-taking (`sec`) and a primary-taking (`pri`)
    move depends on in the instance: instances with equal keys share targets."""
    sec = (inst.dsk, inst.su, inst.res)
    pri = (inst.run_mem, inst.stop_mem, inst.dsk, inst.vcpus, inst.su, inst.all_vcpus, excl_id)
    return sec, pri


def _p_leaves(
    w: Work, p: int, inst: WorkInstance, dsk: int
) -> tuple[list[float], list[float], float]:
    """The primary `p` gives the instance up entirely (its VM and its copy), as
    failover-and-replace and replace-primary both have it: the value changes
    (d1, q) and the score part, from zero."""
    d1, q = [0.0] * NM, [0.0] * NM
    sc = _cf(
        w, p, inst.run_mem, -inst.stop_mem, dsk, -inst.vcpus, -inst.su, -1, 0, w.r_mem[p], d1, q
    )
    return d1, q, sc


def own_side(
    w: Work, i: int, excl_ids: dict[tuple[str, ...], int]
) -> tuple[OwnSide, list[tuple[MoveKind, Coef, tuple[int, ...]]]]:
    """The instance's own side (kept from step to step while its nodes are
    unchanged, see `Search._refresh`): which kinds its nodes allow and, per kind, the
    bound's mean-independent parts (`coef`) and its targets' key. The reference
    `reactors.balance.step.batch.own_sides` is tested against; not called by the planner."""
    p, s = w.p[i], w.s[i]
    inst = w.insts[i]
    mem, res, dsk = inst.mem, inst.res, inst.dsk
    s_can_pri = (
        w.usable[s] and w.c_free[s] >= mem and w.all_vcpus[s] + inst.all_vcpus <= w.vcpu_limit[s]
    )
    p_n1_ok = not w.online[p] or w.r_mem[p] <= w.c_free[p]
    r_s_less = w.new_r(s, p, res, -1, 0)  # s without this instance's reservation
    s_pri_ok = s_can_pri and r_s_less <= w.c_free[s] - mem
    loc_own = -W_LOC * len(w.locs[p] & w.locs[s]) if w.has_locs and w.online[p] else 0.0
    tags_src = _tags_src(w, inst, p)
    sec_key, pri_key = target_keys(inst, excl_ids.setdefault(inst.excl, len(excl_ids)))
    sides: list[tuple[MoveKind, CSide, tuple[int, ...]]] = []
    if s_pri_ok:
        r_p = w.new_r(p, -1, 0, s, res)
        if _ok_gain(w, p, r_p, w.c_free[p] + mem):
            d1, q = [0.0] * NM, [0.0] * NM
            sc = _cf(w, p, inst.run_mem, -inst.stop_mem, 0, -inst.vcpus, 0, -1, 1, r_p, d1, q)
            sc += _cf(w, s, -inst.run_mem, inst.stop_mem, 0, inst.vcpus, 0, 1, -1, r_s_less, d1, q)
            sides.append((MoveKind.FAILOVER, (d1, q, None, sc + tags_src + loc_own), ()))
        d1, q, sc = _p_leaves(w, p, inst, dsk)
        sc += _cf(w, s, -inst.run_mem, inst.stop_mem, 0, inst.vcpus, 0, 1, -1, r_s_less, d1, q)
        sides.append(
            (MoveKind.FAILOVER_AND_REPLACE, (d1, q, None, sc + tags_src + loc_own), sec_key)
        )
    if p_n1_ok:
        d1, q = [0.0] * NM, [0.0] * NM
        sc_ls = _cf(w, s, 0, 0, dsk, 0, -inst.su, 0, -1, r_s_less, d1, q)
        sides.append((MoveKind.REPLACE_SECONDARY, (d1, q, None, sc_ls + loc_own), sec_key))
        # replace-and-failover: p becomes the secondary, with t as a new peer
        r_lo = max(w.r_mem[p], res)
        r_hi = w.c_free[p] + mem if w.online[p] else r_lo
        if r_lo <= r_hi:
            d1, q = d1.copy(), q.copy()
            sc = _cf(
                w, p, inst.run_mem, -inst.stop_mem, 0, -inst.vcpus, 0, -1, 1, r_lo, d1, q, True
            )
            rng = _rem_range(w, p, r_lo, r_hi)
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
            d1, q, sc = _p_leaves(w, p, inst, dsk)
            sc += _cf(w, s, 0, 0, 0, 0, 0, 0, 0, r_lo, d1, q, True)
            rng = _rem_range(w, s, r_lo, r_hi)
            sides.append((MoveKind.REPLACE_PRIMARY, (d1, q, rng, sc + tags_src + loc_own), pri_key))
    own = OwnSide(
        i=i,
        inst=inst,
        p=p,
        s=s,
        p_n1_ok=p_n1_ok,
        s_pri_ok=s_pri_ok,
        r_s_less=r_s_less,
    )
    n = float(len(w.online_idx))
    return own, [(kind, coef(side, n), key) for kind, side, key in sides]


def _cf(
    w: Work,
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
    """A node change independent of the current means (`reactors.balance.step.deltas`
    needs them): adds node k's change of each value (d1) and of its square (q)
    and returns the change of
    the scalar components. `skip_rem`: leave p_rem out (taken as a range).
    The reference of `reactors.balance.step.batch._change` and `_add`."""
    old, new, scalar = w.node_change(k, dfm, dstop, ddsk, dcpu, dsp, dnp, dns, new_r)
    for m, (nv, ov) in enumerate(zip(new, old, strict=True)):
        if nv != ov and not (skip_rem and m == 3):
            d1[m] += nv - ov
            q[m] += nv * nv - ov * ov
    return scalar


def _rem_range(w: Work, k: int, r_lo: int, r_hi: int) -> tuple[float, float, float] | None:
    """Node k's p_rem (old value, low, high) with its reserved memory anywhere
    in [r_lo, r_hi]; None for an offline node (no p_rem scored). The reference
    of the batch's p_rem ranges."""
    if not w.online[k]:
        return None
    return (w.vals[k][3], r_lo / w.t_mem[k], r_hi / w.t_mem[k])


def _tags_src(w: Work, inst: WorkInstance, src: int) -> float:
    """A lower bound of `Deltas.tags_delta(inst, src, any other node)`."""
    if not inst.excl or not w.online[src]:
        return 0.0
    tags = w.ptags[src]
    out = -W_TAGS * sum(1 for e in inst.excl if tags[e] >= 2)
    if w.has_locs:
        out -= W_LOC_EXCL * len(w.locs[src]) * len(inst.excl)
    return out


def _ok_gain(w: Work, k: int, new_r: int, new_free: int) -> bool:
    """A node that gains a reservation keeps N+1 (offline nodes are not checked:
    they keep copies, they take nothing new)."""
    return not w.online[k] or new_r <= new_free


def coef(side: CSide, n: float) -> Coef:
    """`Bounds._vecs`'s low and high of a side are linear in the metric's mean c:
    low = q/n - 2 c d1/n - 2 sq/n^2, high = q/n - 2 c d1/n (sq: the largest square
    of d1 over the p_rem range), plus the range's part of d2 for p_rem. The
    reference of the coefficients `reactors.balance.step.batch` writes."""
    d1s, qs, rng, scalar = side
    base_lo: list[float] = []
    base_hi: list[float] = []
    slope: list[float] = []
    for m in range(NM):
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


def range_part(
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


class Sides:
    """Every own side's bound parts that do not depend on the current means (its
    `coef`), one row per movable instance and move kind (`SLOTS`), kept from step
    to step: a row is rewritten only when its instance's own side is recomputed,
    i.e. when a move changed its primary's or secondary's node. Rows are in the
    order the bounds are ranked in (instance, then kind), so a stable sort of the
    bounds keeps equal ones in that order."""

    def __init__(self, n_inst: int) -> None:
        rows = n_inst * NSLOT
        self.base_lo = np.zeros((rows, NM))
        self.base_hi = np.zeros((rows, NM))
        self.slope = np.zeros((rows, NM))
        self.scalar = np.zeros(rows)
        self.rng = np.zeros((rows, 3))
        self.has_rng = np.zeros(rows, dtype=np.bool_)
        self.valid = np.zeros(rows, dtype=np.bool_)
        self.family = np.tile(np.array(FAMILY, dtype=np.int64), n_inst)
        # per row, the id of its target-list key within its family
        self.key = np.zeros(rows, dtype=np.int64)
        self.key_ids: tuple[dict[tuple[int, ...], int], ...] = ({}, {}, {})
        self.keys: tuple[list[tuple[int, ...]], ...] = ([], [], [])
        # the exclusion-tag sets of instances, by id (part of primary-taking keys)
        self.excl_ids: dict[tuple[str, ...], int] = {(): 0}
        # per instance and family, the id of its key (-1: none given yet)
        self.kid_of = np.full((n_inst, 3), -1, dtype=np.int64)
        # `key_figures`' arrays, extended as keys are added
        self._figs: dict[tuple[int, int], tuple[list[int], dict[int, int], Ints]] = {}

    def key_figures(self, fam: int, col: int) -> tuple[Ints, Ints]:
        """One figure of a family's keys (`col`: the key's element; for
        primary-taking keys, KEY_MEM: the memory, running plus stopped): its
        distinct values, in the order keys first had them, and per key id the
        position of its value. Extended as keys are added, never rebuilt."""
        vals, at, inv = self._figs.get((fam, col), ([], {}, np.zeros(0, dtype=np.int64)))
        keys = self.keys[fam]
        if inv.size < len(keys):
            more: list[int] = []
            for key in keys[inv.size :]:
                v = key[0] + key[1] if col == KEY_MEM else key[col]
                j = at.get(v)
                if j is None:
                    j = at[v] = len(vals)
                    vals.append(v)
                more.append(j)
            inv = np.concatenate((inv, np.array(more, dtype=np.int64)))
        self._figs[(fam, col)] = (vals, at, inv)
        return np.array(vals, dtype=np.int64), inv

    def put(self, i: int, sides: list[tuple[MoveKind, Coef, tuple[int, ...]]]) -> None:
        """Rewrite the rows of instance i: its own sides (kind, `coef`, key). The
        reference of how `reactors.balance.step.batch.own_sides` writes its rows (the
        planner does not call it)."""
        first = i * NSLOT
        self.valid[first : first + NSLOT] = False
        for kind, coef, key in sides:
            base_lo, base_hi, slope, rng, scalar = coef
            slot = SLOT[kind]
            r = first + slot
            self.base_lo[r] = base_lo
            self.base_hi[r] = base_hi
            self.slope[r] = slope
            self.scalar[r] = scalar
            self.has_rng[r] = rng is not None
            if rng is not None:
                self.rng[r] = rng
            self.valid[r] = True
            fam = FAMILY[slot]
            ids = self.key_ids[fam]
            kid = ids.get(key)
            if kid is None:
                kid = ids[key] = len(self.keys[fam])
                self.keys[fam].append(key)
            self.key[r] = kid
