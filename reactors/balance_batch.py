"""Many instances' own sides at once (`own_sides`): what `own_side` and `coef`
give instance by instance, and `Sides.put` writes, as array arithmetic over every
instance a move made stale, operation for operation (the same floating-point
results). The per-instance rules (which kinds the two nodes allow, reservations,
tag and location parts, target keys) stay scalar; the per-node value changes, their
sums and the bound coefficients are computed for all instances together. Also
every instance's exact own parts of a step (`Exacts`: what `Deltas.node_delta`
and `Deltas.combine` give one candidate at a time), at the step's means.

Pure: no I/O, no logging, no asyncio; it reads the `Work`, never changes it, and
writes only the rows of the `Sides` it is given. Comes after
`reactors.balance_sides` and `reactors.balance_deltas`; used by
`reactors.balance_search` (`Search._refresh` and every step's `Exacts`).
"""

from __future__ import annotations

import math

import numpy as np

from reactors.balance_arrays import Bools, Floats, Ints
from reactors.balance_deltas import Stats
from reactors.balance_sides import FAMILY, NSLOT, Own, Sides, _ok_gain, _tags_src
from reactors.balance_work import M_WEIGHT, NM, W_LOC, W_N1, W_OFF_ALL, W_OFF_PRI, W_RTOTAL, Work

_Change = tuple[Floats, Floats, Floats]  # new values, old values, scalar


class _Nodes:
    """The `Work`'s per-node figures as arrays, for one batch."""

    def __init__(self, w: Work) -> None:
        self.online = np.array(w.online, dtype=np.bool_)
        self.f_mem = np.array(w.f_mem, dtype=np.int64)
        self.stopped = np.array(w.stopped, dtype=np.int64)
        self.f_dsk = np.array(w.f_dsk, dtype=np.int64)
        self.used_cpus = np.array(w.used_cpus, dtype=np.int64)
        self.ispind = np.array(w.ispind, dtype=np.int64)
        self.n_pri = np.array(w.n_pri, dtype=np.int64)
        self.n_sec = np.array(w.n_sec, dtype=np.int64)
        self.r_mem = np.array(w.r_mem, dtype=np.int64)
        self.t_mem = np.array(w.t_mem, dtype=np.float64)
        self.t_dsk = np.array(w.t_dsk, dtype=np.float64)
        self.t_cpu = np.array(w.t_cpu, dtype=np.int64)
        self.speed = np.array(w.speed, dtype=np.float64)
        self.sden = np.array(w.sden, dtype=np.float64)
        self.vals = np.array(w.vals, dtype=np.float64).reshape(len(w.names), NM)


def _change(
    a: _Nodes,
    k: Ints,
    dfm: Ints,
    dstop: Ints,
    ddsk: Ints,
    dcpu: Ints,
    dsp: Ints,
    dnp: Ints | int,
    dns: Ints | int,
    new_r: Ints,
) -> _Change:
    """`balance_sides._cf` for every row: node k's new values (`Work.node_values`),
    its old ones and the change of the scalar components."""
    np_old, ns_old = a.n_pri[k], a.n_sec[k]
    np_new, ns_new = np_old + dnp, ns_old + dns
    f_new = a.f_mem[k] + dfm
    t_mem, t_dsk, sden = a.t_mem[k], a.t_dsk[k], a.sden[k]
    isp = a.ispind[k] + dsp
    new = np.empty((k.size, NM))
    new[:, 0] = f_new / t_mem
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


_Spec = tuple[Ints, Ints, Ints, Ints, Ints, Ints, int, int, Ints]


def _changes(a: _Nodes, specs: list[_Spec]) -> list[_Change]:
    """`_change` of each spec (same-sized rows), computed as one batch."""
    nb = specs[0][0].size
    cols = [np.concatenate([sp[j] for sp in specs]) for j in range(6)]
    dnp = np.repeat(np.array([sp[6] for sp in specs], dtype=np.int64), nb)
    dns = np.repeat(np.array([sp[7] for sp in specs], dtype=np.int64), nb)
    new_r = np.concatenate([sp[8] for sp in specs])
    k, dfm, dstop, ddsk, dcpu, dsp = cols
    new, old, scalar = _change(a, k, dfm, dstop, ddsk, dcpu, dsp, dnp, dns, new_r)
    return [
        (new[j * nb : (j + 1) * nb], old[j * nb : (j + 1) * nb], scalar[j * nb : (j + 1) * nb])
        for j in range(len(specs))
    ]


def _add(d1: Floats, q: Floats, ch: _Change, on: Bools, skip_rem: bool) -> tuple[Floats, Floats]:
    """`_cf`'s sums: each changed value's change (d1) and change of square (q)."""
    new, old, _ = ch
    changed = (new != old) & on[:, None]
    if skip_rem:
        changed[:, 3] = False
    d1 = d1 + np.where(changed, new - old, 0.0)
    q = q + np.where(changed, new * new - old * old, 0.0)
    return d1, q


def own_sides(w: Work, sides: Sides, idx: list[int], figs: Figures) -> tuple[list[Own], list[int]]:
    """`own_side` of every instance in `idx` (ascending), written to `sides` as
    `Sides.put` writes them one by one; returns their `Own` sides and the
    reserved memory of their primary after a failover (0: no failover)."""
    owns: list[Own] = []
    cols: list[list[int]] = [[] for _ in range(9)]
    extra: list[list[float]] = [[], []]  # tags_src, loc_own
    oks: list[list[bool]] = [[] for _ in range(5)]  # per slot
    keys: list[tuple[tuple[int, ...], ...]] = []
    excl_ids = sides.excl_ids
    online, c_free, r_mem = w.online, w.c_free, w.r_mem
    for i in idx:
        p, s = w.p[i], w.s[i]
        inst = w.insts[i]
        mem, res = inst.mem, inst.res
        s_can_pri = (
            w.usable[s] and c_free[s] >= mem and w.all_vcpus[s] + inst.all_vcpus <= w.vcpu_limit[s]
        )
        p_n1_ok = not online[p] or r_mem[p] <= c_free[p]
        r_s_less = w.new_r(s, p, res, -1, 0)
        s_pri_ok = s_can_pri and r_s_less <= c_free[s] - mem
        loc_own = -W_LOC * len(w.locs[p] & w.locs[s]) if w.has_locs and online[p] else 0.0
        sec_key = (inst.dsk, inst.su, inst.res)
        excl_id = excl_ids.setdefault(inst.excl, len(excl_ids))
        pri_key = (
            inst.run_mem,
            inst.stop_mem,
            inst.dsk,
            inst.vcpus,
            inst.su,
            inst.all_vcpus,
            excl_id,
        )
        rp = w.new_r(p, -1, 0, s, res) if s_pri_ok else 0
        fo = s_pri_ok and _ok_gain(w, p, rp, c_free[p] + mem)
        f_lo = max(r_mem[p], res)
        f_hi = c_free[p] + mem if online[p] else f_lo
        g_lo = max(r_s_less, res)
        g_hi = c_free[s]
        for col, v in zip(
            cols,
            (p, s, r_s_less, rp, r_mem[p], f_lo, f_hi, g_lo, g_hi),
            strict=True,
        ):
            col.append(v)
        extra[0].append(_tags_src(w, inst, p))
        extra[1].append(loc_own)
        for ok_list, ok in zip(
            oks,
            (fo, s_pri_ok, p_n1_ok, p_n1_ok and f_lo <= f_hi, s_pri_ok and g_lo <= g_hi),
            strict=True,
        ):
            ok_list.append(ok)
        keys.append(((), sec_key, sec_key, pri_key, pri_key))
        owns.append(
            Own(i=i, inst=inst, p=p, s=s, p_n1_ok=p_n1_ok, s_pri_ok=s_pri_ok, r_s_less=r_s_less)
        )
    with np.errstate(all="ignore"):
        _write(w, sides, idx, figs, cols, extra, oks, keys)
    return owns, cols[3]


def _write(
    w: Work,
    sides: Sides,
    idx: list[int],
    figs: Figures,
    cols: list[list[int]],
    extra: list[list[float]],
    oks: list[list[bool]],
    keys: list[tuple[tuple[int, ...], ...]],
) -> None:
    """The batch's sides (`own_side`, `coef`), written as `Sides.put` does."""
    a = _Nodes(w)
    p, s, r_sl, r_p, r_mp, rf_lo, rf_hi, rp_lo, rp_hi = (np.array(c, dtype=np.int64) for c in cols)
    ii = np.array(idx, dtype=np.int64)
    run, stop, dsk, cpu, su = (x[ii] for x in (figs.run, figs.stop, figs.dsk, figs.cpu, figs.su))
    tags, loc = (np.array(e, dtype=np.float64) for e in extra)
    zero = np.zeros(p.size, dtype=np.int64)
    on_p, on_s = a.online[p], a.online[s]
    ch_a, ch_b, ch_c, ch_d, ch_e, ch_f = _changes(
        a,
        [
            (p, run, -stop, zero, -cpu, zero, -1, 1, r_p),
            (s, -run, stop, zero, cpu, zero, 1, -1, r_sl),
            (p, run, -stop, dsk, -cpu, -su, -1, 0, r_mp),
            (s, zero, zero, dsk, zero, -su, 0, -1, r_sl),
            (p, run, -stop, zero, -cpu, zero, -1, 1, rf_lo),
            (s, zero, zero, zero, zero, zero, 0, 0, rp_lo),
        ],
    )
    z = np.zeros((p.size, NM))
    fo = _add(*_add(z, z, ch_a, on_p, False), ch_b, on_s, False)
    far = _add(*_add(z, z, ch_c, on_p, False), ch_b, on_s, False)
    rs = _add(z, z, ch_d, on_s, False)
    rf = _add(*rs, ch_e, on_p, True)
    rp = _add(*_add(z, z, ch_c, on_p, False), ch_f, on_s, True)
    sc_d = ch_d[2]
    scal = (
        ch_a[2] + ch_b[2] + tags + loc,
        ch_c[2] + ch_b[2] + tags + loc,
        sc_d + loc,
        sc_d + ch_e[2] + tags + loc,
        ch_c[2] + ch_f[2] + tags + loc,
    )
    vals3 = a.vals[:, 3]
    rngs = (
        None,
        None,
        None,
        (on_p, vals3[p], rf_lo / a.t_mem[p], rf_hi / a.t_mem[p]),
        (on_s, vals3[s], rp_lo / a.t_mem[s], rp_hi / a.t_mem[s]),
    )
    n = float(len(w.online_idx))
    first = ii * NSLOT
    for slot in range(NSLOT):
        sides.valid[first + slot] = False
    # key ids in the order `Sides.put` gives them (instance, then slot)
    kid_rows: list[int] = []
    kid_vals: list[int] = []
    for j, row0 in enumerate(first.tolist()):
        for slot in range(NSLOT):
            if oks[slot][j]:
                fam = FAMILY[slot]
                ids = sides.key_ids[fam]
                key = keys[j][slot]
                kid = ids.get(key)
                if kid is None:
                    kid = ids[key] = len(sides.keys[fam])
                    sides.keys[fam].append(key)
                kid_rows.append(row0 + slot)
                kid_vals.append(kid)
    for slot, (d1, q), sc, rng in zip(range(NSLOT), (fo, far, rs, rf, rp), scal, rngs, strict=True):
        sel = np.array(oks[slot], dtype=np.bool_)
        if not sel.any():
            continue
        rows = first[sel] + slot
        d1, q, sc = d1[sel], q[sel], sc[sel]
        sq = d1 * d1
        if rng is not None:
            has, old, lo, hi = (x[sel] for x in rng)
            l1 = d1[:, 3] + (lo - old)
            h1 = d1[:, 3] + (hi - old)
            l2, h2 = l1 * l1, h1 * h1
            sq[:, 3] = np.where(has, np.where(h2 > l2, h2, l2), sq[:, 3])
            sides.has_rng[rows] = has
            sides.rng[rows[has]] = np.stack((old, lo, hi), axis=1)[has]
        else:
            sides.has_rng[rows] = False
        sides.base_lo[rows] = q / n - 2.0 * sq / (n * n)
        sides.base_hi[rows] = q / n
        sides.slope[rows] = -2.0 * d1 / n
        sides.scalar[rows] = sc
        sides.valid[rows] = True
    sides.key[np.array(kid_rows, dtype=np.int64)] = np.array(kid_vals, dtype=np.int64)


class Figures:
    """Every instance's figures a move changes node values by, as arrays."""

    def __init__(self, w: Work) -> None:
        ins = w.insts
        self.run = np.array([x.run_mem for x in ins], dtype=np.int64)
        self.stop = np.array([x.stop_mem for x in ins], dtype=np.int64)
        self.dsk = np.array([x.dsk for x in ins], dtype=np.int64)
        self.cpu = np.array([x.vcpus for x in ins], dtype=np.int64)
        self.su = np.array([x.su for x in ins], dtype=np.int64)
        self.res = np.array([x.res for x in ins], dtype=np.int64)


class Exacts:
    """Every movable instance's exact own parts for one step, as
    `Deltas.node_delta` sums them (d1 and d2 per metric, interleaved): its
    secondary losing its copy (`ls`), a failover whose new secondary then loses
    the copy (`fr`, without the tag part) and its primary losing its copy (`lp`),
    each with its scalar; and a failover's delta (`fo`, without its tag and
    location parts). Arrays or lists by instance index."""

    def __init__(
        self, w: Work, st: Stats, vn: list[float], own: tuple[Ints, Ints, Ints, Ints], figs: Figures
    ) -> None:
        p, s, r_sl, r_p = own
        a = _Nodes(w)
        run, stop, cpu = figs.run, figs.stop, figs.cpu
        dsk, su = figs.dsk, figs.su
        self.dsk, self.su, self.res = figs.dsk, figs.su, figs.res
        zero = np.zeros(p.size, dtype=np.int64)
        c = np.array(st.center, dtype=np.float64)
        with np.errstate(all="ignore"):
            ch_s, ch_p, ch_f, ch_a = _changes(
                a,
                [
                    (s, zero, zero, dsk, zero, -su, 0, -1, r_sl),
                    (p, run, -stop, dsk, -cpu, -su, -1, 0, a.r_mem[p]),
                    (s, -run, stop, zero, cpu, zero, 1, -1, r_sl),
                    (p, run, -stop, zero, -cpu, zero, -1, 1, r_p),
                ],
            )
            z = np.zeros((p.size, 2 * NM))
            ls = _acc(z, ch_s, a.online[s], c)
            lp = _acc(z, ch_p, a.online[p], c)
            fr = _acc(lp, ch_f, a.online[s], c)
            sc_fr = ch_p[2] + ch_f[2]
            fo = _acc(_acc(z, ch_a, a.online[p], c), ch_f, a.online[s], c)
            fo_d = (ch_a[2] + ch_f[2]) + _combine(fo, st, vn)
        self.ls, self.fr, self.lp = ls, fr, lp
        self.sc_ls_a, self.sc_fr_a = ch_s[2], sc_fr
        self.sc_ls: list[float] = ch_s[2].tolist()
        self.sc_lp: list[float] = ch_p[2].tolist()
        # a failover's delta without its tag and location parts
        self.fo: list[float] = fo_d.tolist()


def _combine(acc: Floats, st: Stats, vn: list[float]) -> Floats:
    """`Deltas.combine` of every row, operation for operation."""
    n = st.n
    out: Floats | float = 0.0
    for m in range(NM):
        d1, d2 = acc[:, 2 * m], acc[:, 2 * m + 1]
        var = (vn[m] + d2) / n - (d1 / n) * (d1 / n)
        term = M_WEIGHT[m] * (np.where(var > 0.0, np.sqrt(var), 0.0) - st.std[m])
        out = out + np.where((d1 == 0.0) & (d2 == 0.0), 0.0, term)
    return np.asarray(out, dtype=np.float64)


def _acc(acc: Floats, ch: _Change, on: Bools, c: Floats) -> Floats:
    """`Deltas.node_delta`'s sums: each changed value's change (d1) and change of
    squared deviation from the mean (d2)."""
    new, old, _ = ch
    changed = (new != old) & on[:, None]
    out = acc.copy()
    out[:, 0::2] = acc[:, 0::2] + np.where(changed, new - old, 0.0)
    d2 = (new - c) * (new - c) - (old - c) * (old - c)
    out[:, 1::2] = acc[:, 1::2] + np.where(changed, d2, 0.0)
    return out
