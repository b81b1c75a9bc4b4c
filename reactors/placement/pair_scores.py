"""Allocation of many instances, hail's way, at array speed: for every
primary/secondary pair at once, whether the instance fits (the rules of
`reactors.placement.allocator._fits`) and the Ganeti cluster score the cluster would
have with it there (what `reactors.placement.score_delta` computes pair by pair), then the
lowest score, ties to the lowest primary and secondary names. Placing the chosen
instance updates only the two nodes it lands on, so a long run of allocations
(`corral capacity`, the placer's pass over pending instances) never refolds or
rescores the cluster. The instances may differ from one allocation to the next,
and a primary or secondary the user pinned narrows the pairs to those holding it.

The score is exact up to floating-point order: each standard deviation is
re-centred on the current mean before every allocation, and only the two changed
values enter it. Instance tags are not modelled here (a tagged instance changes
the exclusion-tag components); `Allocator.of` refuses such a spec and the caller
uses `reactors.placement.allocator.choose_pair` instead. Given each node's
spindle room (`reactors.htools.state.spindle_room`), a pair fits only where both
nodes have room for one more copy, and placing takes one from each; given
`keep_free_mib`, the free memory and disk every node must keep after placing
(`reactors.placement.allocator.choose_pair`'s).

Pure: no I/O, no logging, no asyncio.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from events.ids import NodeName
from events.state import ClusterState
from reactors.htools.model import LOCAL_STORAGE_TEMPLATES, from_state
from reactors.htools.score import std_dev
from reactors.htools.state import SpindleRoom
from reactors.placement.allocator import TIE, unusable
from reactors.placement.node_loads import loads
from reactors.placement.score_delta import _SHRINK, METRIC_WEIGHT, NewInstance, prepare

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

_W_N1 = 1.0  # n1_cnt
_W_RTOTAL = 0.25  # reserved_mem_rtotal
_W_LOCATION = 1.0  # location_score
# _STD_METRICS order in score_delta: p_mem, p_mem_forth, p_dsk, p_rem, p_cpu,
# n_pri, n_all, spindles.
(_MEM, _MEM_FORTH, _DSK, _REM, _CPU, _NPRI, _NALL, _SPN) = range(8)
# The values only a primary changes (a secondary copy takes disk, not memory or
# CPU), and those both nodes change, the secondary's regardless of the primary.
_PRIMARY_ONLY = np.array([_MEM, _MEM_FORTH, _CPU, _NPRI])
_BOTH = np.array([_DSK, _NALL, _SPN])
_WEIGHTS = np.array(METRIC_WEIGHT)


class _Exact:
    """Standard deviations in two passes with `reactors.htools.score`'s own
    arithmetic, over the online nodes' values with a few of them changed."""

    def __init__(self, *, now: Floats, online: Bools) -> None:
        self.rows = [[float(v) for v in row] for row in now[:, online]]
        self.at = np.cumsum(online) - 1  # node index -> position among online
        self.online = online

    def std(self, metric: int, changes: tuple[tuple[int, float], ...]) -> float:
        values = self.rows[metric]
        if changes:
            values = list(values)
            for node, value in changes:
                if self.online[node]:
                    values[self.at[node]] = float(value)
        return std_dev(values)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pick:
    primary: NodeName
    secondary: NodeName
    score_delta: float  # how much the cluster score moves (relative, for ranking)
    possible: int = 0  # the pairs that fit


class Allocator:
    """The cluster's nodes (sorted by name) as arrays; `pick` scores every pair for
    one more instance (of the spec it was built with, or the one given), `place`
    records it. Mutable working state of a pure computation: build one per run
    with `of` (one spec) or the constructor."""

    def __init__(
        self,
        *,
        state: ClusterState,
        inst: NewInstance | None = None,
        spindle_room: Mapping[NodeName, SpindleRoom] | None = None,
        keep_free_mib: int = 0,
    ) -> None:
        cluster = from_state(state=state)
        base = prepare(cluster)
        names = sorted(state.desired.nodes)
        self.names = [NodeName(n) for n in names]
        self.inst = inst
        # The cluster score with every instance placed so far (the prepared
        # score plus each placement's delta).
        self.total = base.total
        n = len(names)
        load = loads(state)
        policy = state.desired.policy
        nodes = [base.nodes[name] for name in names]
        index: dict[str, int] = {name: i for i, name in enumerate(names)}
        self.index = index

        def arr(values: list[float] | list[int]) -> Floats:
            return np.array(values, dtype=np.float64)

        # What the rules read (reactors.placement.allocator.loads).
        self.mem_total = arr([load[x].mem_total for x in self.names])
        self.mem_primary = arr([load[x].mem_primary for x in self.names])
        self.disk_total = arr([load[x].disk_total for x in self.names])
        self.disk_used = arr([load[x].disk_used for x in self.names])
        self.vcpus_primary = arr([load[x].vcpus_primary for x in self.names])
        self.vcpu_cap = arr(
            [load[x].cpus * policy.vcpu_ratio - load[x].host_cpus for x in self.names]
        )
        # sec_for[s, p]: memory s must take over if p fails (auto-balanced only).
        self.sec_for = np.zeros((n, n))
        for x in self.names:
            for peer, mem in load[x].secondary_for.items():
                if peer in index:
                    self.sec_for[index[x], index[peer]] = mem
        # disk copies each node may still take (no limit: infinite)
        room = spindle_room or {}
        self.room = arr([float(room[x].copies) if x in room else np.inf for x in self.names])
        self.keep = keep_free_mib
        self.n_plus_one = policy.n_plus_one
        self.reserve_stopped = policy.reserve_stopped_memory
        usable = np.array(
            [unusable(state, x) is None and nodes[i].online for i, x in enumerate(self.names)],
            dtype=bool,
        )
        self.allowed: Bools = usable[:, None] & usable[None, :] & ~np.eye(n, dtype=bool)
        groups = np.array([load[x].group for x in self.names])
        self.allowed &= groups[:, None] == groups[None, :]
        dom = policy.failure_domain_prefixes
        if dom:
            doms = [{t for t in load[x].tags if t.startswith(dom)} for x in self.names]
            for i in range(n):
                for j in range(n):
                    if doms[i] & doms[j]:
                        self.allowed[i, j] = False

        # What the score reads (score_delta's per-node facts).
        self.online: Bools = np.array([nd.online for nd in nodes], dtype=bool)
        self.t_mem = arr([nd.t_mem for nd in nodes])
        self.f_mem = arr([nd.f_mem for nd in nodes])
        self.over = arr([nd.over for nd in nodes])
        self.stopped_mem = arr([nd.stopped_mem for nd in nodes])
        self.t_dsk = arr([nd.t_dsk for nd in nodes])
        self.f_dsk = arr([nd.f_dsk for nd in nodes])
        self.t_cpu = arr([nd.t_cpu for nd in nodes])
        self.cpu_speed = arr([nd.cpu_speed for nd in nodes])
        self.used_cpus = arr([nd.used_cpus for nd in nodes])
        self.spindle_den = arr([nd.spindle_den for nd in nodes])
        self.inst_spindles = arr([nd.inst_spindles for nd in nodes])
        self.n_pri = arr([nd.n_pri for nd in nodes])
        self.n_sec = arr([nd.n_sec for nd in nodes])
        # per_peer[s, p]: htools' N+1 reservation of s for peer p.
        self.per_peer = np.zeros((n, n))
        for i, nd in enumerate(nodes):
            for other, mem in nd.per_peer.items():
                if other in index:
                    self.per_peer[i, index[other]] = mem
        self.r_mem = arr([nd.r_mem for nd in nodes])
        self.shared_locations = np.array(
            [[len(a.locations & b.locations) for b in nodes] for a in nodes], dtype=np.float64
        )

    @staticmethod
    def of(
        *,
        state: ClusterState,
        inst: NewInstance,
        spindle_room: Mapping[NodeName, SpindleRoom] | None = None,
        keep_free_mib: int = 0,
    ) -> Allocator | None:
        """An allocator for `inst`, or None when the spec needs the pair-by-pair
        allocator (tagged instances)."""
        if inst.tags:
            return None
        return Allocator(
            state=state, inst=inst, spindle_room=spindle_room, keep_free_mib=keep_free_mib
        )

    # --------------------------------------------------------------- rules

    def _fits(self, inst: NewInstance) -> Bools:
        # what a node has to spare, `keep` MiB of it set aside
        mem_free = self.mem_total - self.mem_primary - self.keep
        disk_ok = ((self.disk_total - self.disk_used - self.keep) >= inst.dsk) & (self.room >= 1)
        hold = inst.mem if (inst.running or self.reserve_stopped) else 0
        p_ok = (mem_free >= hold) & disk_ok & (self.vcpus_primary + inst.vcpus <= self.vcpu_cap)
        ok: Bools = self.allowed & p_ok[:, None] & disk_ok[None, :]
        if self.n_plus_one:
            n1_need = self.sec_for.max(axis=1, initial=0.0)  # no nodes: no need
            # The new instance adds to what s holds for p...
            need_s = self.sec_for.T + (inst.mem if inst.auto_balance else 0)  # [p, s]
            ok &= np.maximum(need_s, n1_need[None, :]) <= mem_free[None, :]
            # ...and takes memory p needs for what it is secondary for.
            ok &= (n1_need <= mem_free - hold)[:, None]
        return ok

    # --------------------------------------------------------------- score

    def _values(
        self,
        *,
        f_mem: Floats,
        stopped_mem: Floats,
        f_dsk: Floats,
        r_mem: Floats,
        used_cpus: Floats,
        n_pri: Floats,
        n_all: Floats,
        inst_spindles: Floats,
    ) -> Floats:
        """score_delta._values for every node: an (8, nodes) array, rows in
        score_delta's metric order. Call under `np.errstate` (x/0 is inf or nan, as
        in htools)."""
        return np.stack(
            [
                (f_mem - self.over) / self.t_mem,
                (f_mem - stopped_mem) / self.t_mem,
                np.where(self.t_dsk == 0, 1.0, f_dsk / self.t_dsk),
                r_mem / self.t_mem,
                used_cpus / self.t_cpu / self.cpu_speed,
                n_pri,
                n_all,
                inst_spindles / self.spindle_den,
            ]
        )

    def _scores(self, inst: NewInstance, ok: Bools) -> Floats:
        """[p, s]: how much the cluster score moves with the instance on (p, s)
        (exact where `ok`: the pairs that fit)."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self._scores_unchecked(inst, ok)

    def _scores_unchecked(self, inst: NewInstance, ok: Bools) -> Floats:
        run_mem = inst.mem if inst.running else 0
        su = inst.spindle_use if inst.disk_template in LOCAL_STORAGE_TEMPLATES else 0
        reserved = inst.mem if (inst.auto_balance and not inst.offline) else 0
        n_all = self.n_pri + self.n_sec
        now = self._values(
            f_mem=self.f_mem,
            stopped_mem=self.stopped_mem,
            f_dsk=self.f_dsk,
            r_mem=self.r_mem,
            used_cpus=self.used_cpus,
            n_pri=self.n_pri,
            n_all=n_all,
            inst_spindles=self.inst_spindles,
        )
        as_p = self._values(
            f_mem=self.f_mem - run_mem,
            stopped_mem=self.stopped_mem + (0 if inst.running else inst.mem),
            f_dsk=self.f_dsk - inst.dsk,
            r_mem=self.r_mem,
            used_cpus=self.used_cpus + (0 if inst.offline else inst.vcpus),
            n_pri=self.n_pri + 1,
            n_all=n_all + 1,
            inst_spindles=self.inst_spindles + su,
        )
        as_s = self._values(
            f_mem=self.f_mem,
            stopped_mem=self.stopped_mem,
            f_dsk=self.f_dsk - inst.dsk,
            r_mem=self.r_mem,
            used_cpus=self.used_cpus,
            n_pri=self.n_pri,
            n_all=n_all + 1,
            inst_spindles=self.inst_spindles + su,
        )
        # r_new[p, s]: s's reservation once it also holds the instance for p.
        r_new = np.maximum(self.r_mem[None, :], self.per_peer.T + reserved)
        rem_s = r_new / self.t_mem[None, :]
        on = self.online
        count = float(on.sum())
        # Each scored standard deviation, re-centred on the current mean; only the
        # changed nodes' deviations enter the new one.
        center = now[:, on].sum(axis=1) / count
        dev = now[:, on] - center[:, None]
        s1, s2 = dev.sum(axis=1), (dev * dev).sum(axis=1)
        exact = _Exact(now=now, online=on)
        base = np.array([exact.std(m, ()) for m in range(len(now))])
        # A variance that falls this low is recomputed in two passes (the
        # running sums lose digits there), as in score_delta.
        floor = _SHRINK * s2 / count
        old = now - center[:, None]
        dp = np.where(on, (as_p - center[:, None]) - old, 0.0)
        qp = np.where(on, (as_p - center[:, None]) ** 2 - old**2, 0.0)
        p_fits: Bools = np.asarray(ok.any(axis=1))
        # Values only a primary changes: one figure per primary.
        rows = _PRIMARY_ONLY
        mean_p = (s1[rows, None] + dp[rows]) / count
        var_p = (s2[rows, None] + qp[rows]) / count - mean_p * mean_p
        std_p = np.sqrt(np.maximum(var_p, 0.0))
        for k, pi in zip(*np.nonzero((var_p < floor[rows, None]) & p_fits[None, :]), strict=True):
            m = rows[k]
            std_p[k, pi] = exact.std(m, ((pi, as_p[m, pi]),))
        total = np.broadcast_to(
            (_WEIGHTS[rows, None] * (std_p - base[rows, None])).sum(axis=0)[:, None],
            (len(self.names), len(self.names)),
        ).copy()
        # Values both nodes change, the secondary's independently of the primary:
        # one [p, s] array per value, worked on in place.
        rows = _BOTH
        ds = np.where(on, (as_s[rows] - center[rows, None]) - old[rows], 0.0)
        qs = np.where(on, (as_s[rows] - center[rows, None]) ** 2 - old[rows] ** 2, 0.0)
        for k, m in enumerate(rows):
            std = self._std_pairs(
                s1[m] + dp[m], ds[k], s2[m] + qp[m], qs[k], count=count, floor=floor[m]
            )
            for pi, si in self._collapsed(std, ok):
                std[pi, si] = exact.std(m, ((pi, as_p[m, pi]), (si, as_s[m, si])))
            std -= base[m]
            std *= METRIC_WEIGHT[m]
            total += std
        # The reservation: the secondary's value depends on the primary.
        m, c = _REM, center[_REM]
        ds_r = (rem_s - c) - old[m][None, :]
        qs_r = (rem_s - c) ** 2 - (old[m] ** 2)[None, :]
        ds_r[:, ~on] = 0.0
        qs_r[:, ~on] = 0.0
        std = self._std_pairs(s1[m] + dp[m], ds_r, s2[m] + qp[m], qs_r, count=count, floor=floor[m])
        for pi, si in self._collapsed(std, ok):
            std[pi, si] = exact.std(m, ((pi, as_p[m, pi]), (si, rem_s[pi, si])))
        std -= base[m]
        std *= METRIC_WEIGHT[m]
        total += std
        # N+1 failures, counted in instances on a failing node.
        fail_old = self.f_mem < self.r_mem
        fail_p_new = (self.f_mem - run_mem) < self.r_mem
        total += (_W_N1 * ((n_all + 1) * fail_p_new - n_all * fail_old))[:, None]
        fail_s_new = self.f_mem[None, :] < r_new
        total += _W_N1 * ((n_all + 1)[None, :] * fail_s_new - (n_all * fail_old)[None, :])
        total += _W_RTOTAL * (rem_s - now[_REM][None, :])
        total += _W_LOCATION * self.shared_locations
        return total

    @staticmethod
    def _std_pairs(
        p1: Floats, d1: Floats, p2: Floats, d2: Floats, *, count: float, floor: float
    ) -> Floats:
        """[p, s]: the standard deviation from the running sums of deviations, the
        primary's part (p1, p2 per primary) plus the secondary's (d1, d2 per
        secondary, or per pair); a variance below `floor` is marked NaN for
        `_collapsed` to find."""
        d1 = d1 if d1.ndim == 2 else d1[None, :]
        d2 = d2 if d2.ndim == 2 else d2[None, :]
        mean = p1[:, None] + d1
        mean /= count
        mean *= mean
        var = p2[:, None] + d2
        var /= count
        var -= mean
        low = var < floor
        np.maximum(var, 0.0, out=var)
        np.sqrt(var, out=var)
        if low.any():
            var[low] = np.nan
        return var

    @staticmethod
    def _collapsed(std: Floats, ok: Bools) -> list[tuple[int, int]]:
        """The fitting pairs whose variance collapsed (recomputed in two passes)."""
        where = np.isnan(std)
        if not where.any():
            return []
        std[where & ~ok] = 0.0  # not a candidate: any number does
        return [(int(p), int(s)) for p, s in zip(*np.nonzero(where & ok), strict=True)]

    # ----------------------------------------------------------- choose/place

    def _inst(self, inst: NewInstance | None) -> NewInstance:
        inst = inst if inst is not None else self.inst
        if inst is None:
            raise ValueError("no instance to allocate: give one or build with `of`")
        if inst.tags:
            raise ValueError("tagged instances need the pair-by-pair allocator")
        return inst

    def pick(
        self,
        inst: NewInstance | None = None,
        *,
        primary: str | None = None,
        secondary: str | None = None,
    ) -> Pick | None:
        """The pair hail would choose for one more instance (on `primary` and/or
        `secondary` when the user pinned them), or None if none fits."""
        inst = self._inst(inst)
        ok = self._fits(inst)
        for pinned, axis in ((primary, 0), (secondary, 1)):
            if pinned is not None:
                at = self.index.get(pinned)
                if at is None:
                    return None
                keep = np.zeros(len(self.names), dtype=bool)
                keep[at] = True
                ok &= keep[:, None] if axis == 0 else keep[None, :]
        if not ok.any():
            return None
        raw = self._scores(inst, ok)
        scores = np.where(ok & ~np.isnan(raw), raw, np.inf)
        low = scores.min()
        # The lowest names among the lowest scores, as in reactors.placement.allocator._best;
        # when every fitting pair scores NaN or +inf, among all of them.
        best = ok if low == np.inf else scores <= low + TIE
        flat = int(np.argmax(best.ravel()))
        p, s = divmod(flat, len(self.names))
        return Pick(
            primary=self.names[p],
            secondary=self.names[s],
            score_delta=float(scores[p, s]),
            possible=int(ok.sum()),
        )

    def place(self, pick: Pick, inst: NewInstance | None = None) -> None:
        """Record one more instance (of the spec, or `inst`) on `pick`'s nodes."""
        inst = self._inst(inst)
        self.total += pick.score_delta
        p, s = self.index[pick.primary], self.index[pick.secondary]
        su = inst.spindle_use if inst.disk_template in LOCAL_STORAGE_TEMPLATES else 0
        if inst.running or self.reserve_stopped:
            self.mem_primary[p] += inst.mem
        self.disk_used[p] += inst.dsk
        self.disk_used[s] += inst.dsk
        self.room[p] -= 1
        self.room[s] -= 1
        self.vcpus_primary[p] += inst.vcpus
        if inst.auto_balance:
            self.sec_for[s, p] += inst.mem
        if inst.running:
            self.f_mem[p] -= inst.mem
        else:
            self.stopped_mem[p] += inst.mem
        self.f_dsk[p] -= inst.dsk
        self.f_dsk[s] -= inst.dsk
        if not inst.offline:
            self.used_cpus[p] += inst.vcpus
        self.inst_spindles[p] += su
        self.inst_spindles[s] += su
        self.n_pri[p] += 1
        self.n_sec[s] += 1
        if inst.auto_balance and not inst.offline:
            self.per_peer[s, p] += inst.mem
            self.r_mem[s] = max(self.r_mem[s], self.per_peer[s, p])
