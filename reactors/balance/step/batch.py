"""Many instances' own sides at once (`own_sides`): what `own_side` and `coef`
give instance by instance, and `Sides.put` writes, as array arithmetic over every
instance a move made stale, operation for operation (the same floating-point
results). The per-instance rules (which kinds the two nodes allow, reservations,
tag and location parts, target keys) stay scalar; the per-node value changes, their
sums and the bound coefficients are computed for all instances together, from
the search's node figures (`reactors.balance.step.arrays.NodeArrays`, through
`Figures`). Also every instance's exact own parts of a step (`ExactParts`: the
d1/d2 sums of `reactors.balance.step.deltas` and the deviations they give), at the
step's means, from its node changes (`own_changes`), which the search keeps
from step to step.

Pure: no I/O, no logging, no asyncio; it reads the `Work`, never changes it, and
writes only the rows of the `Sides` it is given.
"""

from __future__ import annotations

import numpy as np

from reactors.balance.step.arrays import Bools, Floats, Ints, NodeArrays
from reactors.balance.step.deltas import Change, Stats, node_changes
from reactors.balance.step.sides import FAMILY, NSLOT, OwnSide, Sides, _tags_src, target_keys
from reactors.balance.work import M_WEIGHT, NM, W_LOC, Work

_Spec = tuple[Ints, Ints, Ints, Ints, Ints, Ints, int, int, Ints]


def _changes(a: NodeArrays, specs: list[_Spec]) -> list[Change]:
    """`node_changes` of each spec (same-sized rows), computed as one batch."""
    nb = specs[0][0].size
    cols = [np.concatenate([sp[j] for sp in specs]) for j in range(6)]
    dnp = np.repeat(np.array([sp[6] for sp in specs], dtype=np.int64), nb)
    dns = np.repeat(np.array([sp[7] for sp in specs], dtype=np.int64), nb)
    new_r = np.concatenate([sp[8] for sp in specs])
    k, dfm, dstop, ddsk, dcpu, dsp = cols
    new, old, scalar = node_changes(a, k, dfm, dstop, ddsk, dcpu, dsp, dnp, dns, new_r)
    return [
        (new[j * nb : (j + 1) * nb], old[j * nb : (j + 1) * nb], scalar[j * nb : (j + 1) * nb])
        for j in range(len(specs))
    ]


def _add(d1: Floats, q: Floats, ch: Change, on: Bools, skip_rem: bool) -> tuple[Floats, Floats]:
    """`_cf`'s sums: each changed value's change (d1) and change of square (q)."""
    new, old, _ = ch
    changed = (new != old) & on[:, None]
    if skip_rem:
        changed[:, 3] = False
    d1 = d1 + np.where(changed, new - old, 0.0)
    q = q + np.where(changed, new * new - old * old, 0.0)
    return d1, q


def own_sides(
    w: Work, sides: Sides, idx: list[int], figs: Figures
) -> tuple[list[OwnSide], list[int]]:
    """`own_side` of every instance in `idx` (ascending), written to `sides` as
    `Sides.put` writes them one by one; returns their own sides (`OwnSide`) and the
    reserved memory of their primary after a failover (0: no failover). The
    node figures are the search's (`Figures.nodes`, refreshed before)."""
    a = figs.nodes
    ii = np.array(idx, dtype=np.int64)
    p_l = [w.p[i] for i in idx]
    s_l = [w.s[i] for i in idx]
    p = np.array(p_l, dtype=np.int64)
    s = np.array(s_l, dtype=np.int64)
    mem, res = figs.mem[ii], figs.res[ii]
    on_p = a.online[p]
    c_free_p, c_free_s = a.c_free[p], a.c_free[s]
    r_mem_p, r_mem_s = a.r_mem[p], a.r_mem[s]
    s_can_pri = (
        a.usable[s] & (c_free_s >= mem) & (a.all_vcpus[s] + figs.all_vcpus[ii] <= a.vcpu_limit[s])
    )
    p_n1_ok = ~on_p | (r_mem_p <= c_free_p)
    # `Work.new_r`: s without this instance's reservation; p with s as a new peer
    cur = a.res[p, s]
    r_s_less = np.where((res != 0) & (cur == r_mem_s), np.maximum(cur - res, a.r2[s]), r_mem_s)
    s_pri_ok = s_can_pri & (r_s_less <= c_free_s - mem)
    r_p = np.where(s_pri_ok, np.maximum(r_mem_p, a.res[s, p] + res), 0)
    fo = s_pri_ok & (~on_p | (r_p <= c_free_p + mem))
    f_lo = np.maximum(r_mem_p, res)
    f_hi = np.where(on_p, c_free_p + mem, f_lo)
    g_lo = np.maximum(r_s_less, res)
    loc = np.where(on_p, -W_LOC * a.loc_n[p, s], 0.0) if w.has_locs else np.zeros(ii.size)
    excl_ids = sides.excl_ids
    insts = w.insts
    memo: dict[tuple[tuple[str, ...], int], float] = {}
    tags: list[float] = []
    for i, pk in zip(idx, p_l, strict=True):
        inst = insts[i]
        excl_ids.setdefault(inst.excl, len(excl_ids))
        if not inst.excl:
            tags.append(0.0)
            continue
        hit = memo.get((inst.excl, pk))
        if hit is None:
            hit = memo[(inst.excl, pk)] = _tags_src(w, inst, pk)
        tags.append(hit)
    owns = [
        OwnSide(i=i, inst=insts[i], p=pk, s=sk, p_n1_ok=n1, s_pri_ok=pri, r_s_less=r)
        for i, pk, sk, n1, pri, r in zip(
            idx, p_l, s_l, p_n1_ok.tolist(), s_pri_ok.tolist(), r_s_less.tolist(), strict=True
        )
    ]
    oks = np.stack((fo, s_pri_ok, p_n1_ok, p_n1_ok & (f_lo <= f_hi), s_pri_ok & (g_lo <= c_free_s)))
    cols = (p, s, r_s_less, r_p, f_lo, f_hi, g_lo, c_free_s)
    with np.errstate(all="ignore"):
        _write(w, sides, ii, figs, cols, (np.array(tags, dtype=np.float64), loc), oks)
    _write_keys(w, sides, idx, ii, oks)
    return owns, r_p.tolist()


def _write_keys(w: Work, sides: Sides, idx: list[int], ii: Ints, oks: Bools) -> None:
    """Each valid row's key id, given out in the order `Sides.put` gives them
    (instance, then slot); an instance's ids are kept (`Sides.kid_of`)."""
    kids = sides.kid_of[ii]
    fams = list(FAMILY)
    need = oks & (kids[:, fams].T < 0)
    if need.any():
        for j in np.flatnonzero(need.any(axis=0)).tolist():
            i = idx[j]
            inst = w.insts[i]
            sec, pri = target_keys(inst, sides.excl_ids[inst.excl])
            for slot, fam in enumerate(fams):
                if not oks[slot, j] or kids[j, fam] >= 0:
                    continue
                key = ((), sec, pri)[fam]
                ids = sides.key_ids[fam]
                kid = ids.get(key)
                if kid is None:
                    kid = ids[key] = len(sides.keys[fam])
                    sides.keys[fam].append(key)
                kids[j, fam] = sides.kid_of[i, fam] = kid
    first = ii * NSLOT
    for slot, fam in enumerate(fams):
        sel = oks[slot]
        sides.key[first[sel] + slot] = kids[sel, fam]


def _write(
    w: Work,
    sides: Sides,
    ii: Ints,
    figs: Figures,
    cols: tuple[Ints, ...],
    extra: tuple[Floats, Floats],
    oks: Bools,
) -> None:
    """The batch's sides (`own_side`, `coef`), written as `Sides.put` does."""
    a = figs.nodes
    p, s, r_sl, r_p, rf_lo, rf_hi, rp_lo, rp_hi = cols
    run, stop, dsk, cpu, su = (x[ii] for x in (figs.run, figs.stop, figs.dsk, figs.cpu, figs.su))
    tags, loc = extra
    zero = np.zeros(p.size, dtype=np.int64)
    on_p, on_s = a.online[p], a.online[s]
    ch_a, ch_b, ch_c, ch_d, ch_e, ch_f = _changes(
        a,
        [
            (p, run, -stop, zero, -cpu, zero, -1, 1, r_p),
            (s, -run, stop, zero, cpu, zero, 1, -1, r_sl),
            (p, run, -stop, dsk, -cpu, -su, -1, 0, a.r_mem[p]),
            (s, zero, zero, dsk, zero, -su, 0, -1, r_sl),
            (p, run, -stop, zero, -cpu, zero, -1, 1, rf_lo),
            (s, zero, zero, zero, zero, zero, 0, 0, rp_lo),
        ],
    )
    z = np.zeros((p.size, NM))
    lose_p = _add(z, z, ch_c, on_p, False)
    fo = _add(*_add(z, z, ch_a, on_p, False), ch_b, on_s, False)
    far = _add(*lose_p, ch_b, on_s, False)
    rs = _add(z, z, ch_d, on_s, False)
    rf = _add(*rs, ch_e, on_p, True)
    rp = _add(*lose_p, ch_f, on_s, True)
    sc_d = ch_d[2]
    scal = np.stack(
        (
            ch_a[2] + ch_b[2] + tags + loc,
            ch_c[2] + ch_b[2] + tags + loc,
            sc_d + loc,
            sc_d + ch_e[2] + tags + loc,
            ch_c[2] + ch_f[2] + tags + loc,
        )
    )
    d1 = np.stack((fo[0], far[0], rs[0], rf[0], rp[0]))
    q = np.stack((fo[1], far[1], rs[1], rf[1], rp[1]))
    sq = d1 * d1
    # replace-and-failover's p and replace-primary's s: p_rem over a range
    vals3 = a.vals[:, 3]
    rng = np.zeros((NSLOT, p.size, 3))
    has = np.zeros((NSLOT, p.size), dtype=np.bool_)
    for slot, k, on, lo_r, hi_r in ((3, p, on_p, rf_lo, rf_hi), (4, s, on_s, rp_lo, rp_hi)):
        old, lo, hi = vals3[k], lo_r / a.t_mem[k], hi_r / a.t_mem[k]
        l1 = d1[slot, :, 3] + (lo - old)
        h1 = d1[slot, :, 3] + (hi - old)
        l2, h2 = l1 * l1, h1 * h1
        sq[slot, :, 3] = np.where(on, np.where(h2 > l2, h2, l2), sq[slot, :, 3])
        rng[slot] = np.stack((old, lo, hi), axis=1)
        has[slot] = on
    n = float(len(w.online_idx))
    rows = ii[None, :] * NSLOT + np.arange(NSLOT)[:, None]
    sides.valid[rows.ravel()] = False
    at = rows[oks]
    q, d1, sq = q[oks], d1[oks], sq[oks]
    sides.base_lo[at] = q / n - 2.0 * sq / (n * n)
    sides.base_hi[at] = q / n
    sides.slope[at] = -2.0 * d1 / n
    sides.scalar[at] = scal[oks]
    sides.has_rng[at] = has[oks]
    ranged = oks & has
    sides.rng[rows[ranged]] = rng[ranged]
    sides.valid[at] = True


class Figures:
    """Every instance's figures a move changes node values by (and its memory
    and vCPUs), as arrays; the distinct values of those a node taking a copy
    (disk, spindle use, reservation: `copy_u`) or a primary (running memory,
    memory, disk, vCPUs, spindle use: `pri_u`) changes it by, with each
    instance's position in them (`copy_at`, `pri_at`); and the search's node
    figures (`nodes`, kept up to date by the search)."""

    def __init__(self, w: Work, nodes: NodeArrays) -> None:
        ins = w.insts
        self.nodes = nodes
        self.mem = np.array([x.mem for x in ins], dtype=np.int64)
        self.all_vcpus = np.array([x.all_vcpus for x in ins], dtype=np.int64)
        self.run = np.array([x.run_mem for x in ins], dtype=np.int64)
        self.stop = np.array([x.stop_mem for x in ins], dtype=np.int64)
        self.dsk = np.array([x.dsk for x in ins], dtype=np.int64)
        self.cpu = np.array([x.vcpus for x in ins], dtype=np.int64)
        self.su = np.array([x.su for x in ins], dtype=np.int64)
        self.res = np.array([x.res for x in ins], dtype=np.int64)
        copy = [_distinct(x) for x in (self.dsk, self.su, self.res)]
        self.copy_u = (copy[0][0], copy[1][0], copy[2][0])
        self.copy_at = (copy[0][1], copy[1][1], copy[2][1])
        pri = [_distinct(x) for x in (self.run, self.run + self.stop, self.dsk, self.cpu, self.su)]
        self.pri_u = tuple(u for u, _ in pri)
        self.pri_at = tuple(at for _, at in pri)


def _distinct(x: Ints) -> tuple[Ints, Ints]:
    """x's distinct values (ascending) and each element's position in them."""
    values, at = np.unique(x, return_inverse=True)
    return values, at.reshape(x.shape)


def own_changes(
    a: NodeArrays, own: tuple[Ints, Ints, Ints, Ints], figs: Figures, ii: Ints
) -> list[Change]:
    """The node changes `ExactParts` sums, for the instances `ii` (`own`: their
    primary, secondary, r_s_less and failover r_p): the secondary losing its
    copy, the primary losing the primary and its copy, the secondary taking the
    primary (a failover) and the primary becoming the secondary. They depend
    on the instances' nodes only, so the search keeps them from step to step."""
    p, s, r_sl, r_p = own
    run, stop, cpu, dsk, su = (x[ii] for x in (figs.run, figs.stop, figs.cpu, figs.dsk, figs.su))
    zero = np.zeros(ii.size, dtype=np.int64)
    with np.errstate(all="ignore"):
        return _changes(
            a,
            [
                (s, zero, zero, dsk, zero, -su, 0, -1, r_sl),
                (p, run, -stop, dsk, -cpu, -su, -1, 0, a.r_mem[p]),
                (s, -run, stop, zero, cpu, zero, 1, -1, r_sl),
                (p, run, -stop, zero, -cpu, zero, -1, 1, r_p),
            ],
        )


class ExactParts:
    """Every movable instance's exact own parts for one step, as
    `reactors.balance.step.deltas` sums them (d1 and d2 per metric, interleaved): its
    secondary losing its copy (`ls`), a failover whose new secondary then loses
    the copy (`fr`, without the tag part) and its primary losing its copy (`lp`),
    each with its scalar; and a failover's delta (`fo_a`, without its tag and
    location parts). Arrays by instance index, from every instance's
    `own_changes` (`changes`; `own`: its primary and secondary)."""

    def __init__(
        self,
        st: Stats,
        vn: list[float],
        own: tuple[Ints, Ints],
        changes: list[Change],
        nodes: NodeArrays,
    ) -> None:
        p, s = own
        on_p, on_s = nodes.online[p], nodes.online[s]
        ch_s, ch_p, ch_f, ch_a = changes
        c = np.array(st.center, dtype=np.float64)
        with np.errstate(all="ignore"):
            z = np.zeros((p.size, 2 * NM))
            ls = _acc(z, ch_s, on_s, c)
            lp = _acc(z, ch_p, on_p, c)
            fr = _acc(lp, ch_f, on_s, c)
            sc_fr = ch_p[2] + ch_f[2]
            fo = _acc(_acc(z, ch_a, on_p, c), ch_f, on_s, c)
            fo_d = (ch_a[2] + ch_f[2]) + _combine(fo, st, vn)
        self.ls, self.fr, self.lp = ls, fr, lp
        self.sc_ls_a, self.sc_fr_a, self.sc_lp_a = ch_s[2], sc_fr, ch_p[2]
        # a failover's delta without its tag and location parts
        self.fo_a: Floats = fo_d


def _combine(acc: Floats, st: Stats, vn: list[float]) -> Floats:
    """Per row, the change of the weighted standard deviations once its d1/d2
    sums are added (`reactors.balance.step.deltas`)."""
    n = st.n
    out: Floats | float = 0.0
    for m in range(NM):
        d1, d2 = acc[:, 2 * m], acc[:, 2 * m + 1]
        var = (vn[m] + d2) / n - (d1 / n) * (d1 / n)
        term = M_WEIGHT[m] * (np.where(var > 0.0, np.sqrt(var), 0.0) - st.std[m])
        out = out + np.where((d1 == 0.0) & (d2 == 0.0), 0.0, term)
    return np.asarray(out, dtype=np.float64)


def _acc(acc: Floats, ch: Change, on: Bools, c: Floats) -> Floats:
    """Each changed value's change (d1) and change of squared deviation from
    the mean (d2), summed per metric."""
    new, old, _ = ch
    changed = (new != old) & on[:, None]
    out = acc.copy()
    out[:, 0::2] = acc[:, 0::2] + np.where(changed, new - old, 0.0)
    d2 = (new - c) * (new - c) - (old - c) * (old - c)
    out[:, 1::2] = acc[:, 1::2] + np.where(changed, d2, 0.0)
    return out
