"""The balancer's mutable working model: the cluster as indexed per-node figures
(free memory and disk, reservations per N+1 peer, vCPUs, spindles, exclusion and
location tags, and with `hbal -U` weights the four dynamic loads) and
per-instance placements and desired locations (`Work`), with each node's scored
values and the exact current score (`Work.total`), and `Work.apply` to move one
instance. Also the score's weights per scored value, as the search uses them.

Pure: no I/O, no logging, no asyncio; it changes only its own copy, never the cluster
it was built from.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass

from reactors.htools.loaded import (
    desired_location_prefixes,
    exclusion_tags,
    load,
    location_tags,
    spindle_ratios,
)
from reactors.htools.model import BASE_UTIL, MIRRORED_TEMPLATE, BCluster, BInstance
from reactors.htools.score import WEIGHTS

# Metric order of the per-node values whose standard deviation is scored, and the
# summed weight of the score components each one feeds (see reactors.htools.score).
M_WEIGHT = (
    WEIGHTS["free_mem_cv"],
    WEIGHTS["free_mem_cv_forth"],
    WEIGHTS["free_disk_cv"] + WEIGHTS["free_disk_cv_forth"],
    WEIGHTS["reserved_mem_cv"],
    WEIGHTS["vcpu_ratio_cv"] + WEIGHTS["vcpu_ratio_cv_forth"],
    WEIGHTS["cpu_load_cv"] + WEIGHTS["mem_load_cv"] + WEIGHTS["net_load_cv"],
    WEIGHTS["disk_load_cv"],
    WEIGHTS["spindles_cv"] + WEIGHTS["spindles_cv_forth"],
)
NM = len(M_WEIGHT)
W_N1 = WEIGHTS["n1_cnt"]
W_RTOTAL = WEIGHTS["reserved_mem_rtotal"]
W_OFF_ALL = WEIGHTS["offline_all_cnt"]
W_OFF_PRI = WEIGHTS["offline_pri_cnt"]
W_TAGS = WEIGHTS["pri_tags_score"]
W_LOC = WEIGHTS["location_score"]
W_LOC_EXCL = WEIGHTS["location_exclusion_score"]
# With utilisation weights (`hbal -U`) the four dynamic loads (cpu, mem, disk,
# net: sums of the instances' weights) are scored instead of metrics 5 and 6
# (counts of primaries and of instances, what every load is without weights).
LOAD_WEIGHT = (
    WEIGHTS["cpu_load_cv"],
    WEIGHTS["mem_load_cv"],
    WEIGHTS["disk_load_cv"],
    WEIGHTS["net_load_cv"],
)
LOAD_METRICS = (5, 6)
NO_LOAD = (0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class WorkInstance:
    name: str
    mem: int  # memory its primary holds free for it (running; all with reserve_stopped)
    run_mem: int  # memory counted in htools' f_mem (running)
    stop_mem: int  # memory of a stopped primary (free memory "forth")
    dsk: int
    vcpus: int  # vCPUs counted by htools (not ADMIN_offline)
    all_vcpus: int  # vCPUs counted by corral's vcpu ratio
    su: int
    res: int  # N+1 reservation on its secondary
    excl: tuple[str, ...]
    load: tuple[float, float, float, float] = NO_LOAD  # cpu, mem, disk, net weights
    dsrd: frozenset[str] = frozenset()  # its desired locations (instance tags)


class Work:
    """The mutable working copy of the cluster the planner moves instances in."""

    def __init__(self, cluster: BCluster, avoid: frozenset[str]) -> None:
        nodes = cluster.nodes
        self.names = [n.name for n in nodes]
        self.index = {n.name: k for k, n in enumerate(nodes)}
        n_nodes = len(nodes)
        self.online = [not n.htools_offline for n in nodes]
        self.usable = [not n.htools_offline and n.name not in avoid for n in nodes]
        for n in nodes:
            if not n.htools_offline and (n.t_mem <= 0 or n.t_cpu <= 0 or n.cpu_speed <= 0):
                raise ValueError(f"node {n.name} has no memory or CPUs to balance with")
        ratio = spindle_ratios(cluster)
        loc_prefixes = cluster.location_prefixes()
        loaded = load(cluster)
        reserve = self.reserve_stopped = cluster.reserve_stopped
        self.t_mem = [float(n.t_mem) for n in nodes]
        self.t_dsk = [float(n.t_dsk) for n in nodes]
        self.speed = [n.cpu_speed for n in nodes]
        self.t_cpu = [float(n.t_cpu) for n in nodes]
        self.sden = [ratio[n.name] * n.spindles for n in nodes]
        # the most spindle use a node may take on (the spindle-ratio policy)
        self.spin_cap = [
            s if cluster.spindle_policy and not n.exclusive_storage else math.inf
            for s, n in zip(self.sden, nodes, strict=True)
        ]
        self.vcpu_limit = [
            n.t_cpu * cluster.group_policy(n.group).vcpu_ratio - n.os_cpus for n in nodes
        ]
        self.locs = [location_tags(n, loc_prefixes) for n in nodes]
        self.has_locs = any(self.locs)
        # f_mem: the reported free memory (N+1 is judged on it, as htools do);
        # over: how much of it the state of record does not have (constant
        # through moves: htools score unallocated memory, f_mem - over).
        self.f_mem = [n.f_mem for n in nodes]
        self.over = [n.f_mem - loaded[n.name].unallocated for n in nodes]
        self.f_dsk = [n.f_dsk for n in nodes]
        self.stopped = [0] * n_nodes
        self.used_cpus = [n.os_cpus for n in nodes]
        self.all_vcpus = [0] * n_nodes
        self.ispind = [0] * n_nodes
        self.n_pri = [0] * n_nodes
        self.n_sec = [0] * n_nodes
        self.rows: list[dict[int, int]] = [{} for _ in nodes]
        self.ptags: list[Counter[str]] = [Counter() for _ in nodes]
        self.insts: list[WorkInstance] = []
        self.p: list[int] = []
        self.s: list[int] = []
        self.movable: list[bool] = []
        self.fixed_sp = [0] * n_nodes
        # per node its dynamic loads (cpu, mem, disk, net), kept only when
        # instances carry utilisation weights
        self.util = any(i.util != BASE_UTIL for i in cluster.instances if not i.forthcoming)
        self.loads = [[0.0, 0.0, 0.0, 0.0] for _ in nodes]
        self._add_instances(cluster)
        # The free memory the rules judge by: the unallocated memory (what
        # htools place and check N+1 with), less the stopped primaries' memory
        # under `reserve_stopped`.
        self.c_free = [
            self.f_mem[k] - self.over[k] - (self.stopped[k] if reserve else 0)
            for k in range(n_nodes)
        ]
        self.r_mem = [max(r.values(), default=0) for r in self.rows]
        self.r2 = [_second(r) for r in self.rows]
        self.loc_excl: Counter[tuple[str, str]] = Counter()
        for mine, pk in zip(self.insts, self.p, strict=True):
            if self.online[pk]:
                for loc in self.locs[pk]:
                    for e in mine.excl:
                        self.loc_excl[(loc, e)] += 1
        self.has_dsrd = any(mine.dsrd for mine in self.insts)
        # what only the plain search (`reactors.balance.step.exact`) scores: the
        # fast one counts instances for the loads and knows no desired locations
        self.plain = self.util or self.has_dsrd
        self.online_idx = [k for k in range(n_nodes) if self.online[k]]
        self.vals = [self._values(k) for k in range(n_nodes)]
        self.version = [0] * n_nodes  # bumped whenever a node's figures change

    def _add_instances(self, cluster: BCluster) -> None:
        """Every instance of `cluster` into the model, counted on its nodes."""
        reserve = self.reserve_stopped
        excl_prefixes = cluster.exclusion_prefixes()
        dsrd_prefixes = desired_location_prefixes(cluster)
        for inst in cluster.instances:
            pk = self.index[inst.pnode]
            sk = self.index[inst.snode] if inst.snode is not None else -1
            if inst.forthcoming:
                self._forthcoming(inst, pk, sk, excl_prefixes)
                continue
            local = inst.local_storage
            run_mem = inst.mem if inst.uses_memory else 0
            mine = WorkInstance(
                name=inst.name,
                mem=inst.mem if reserve else run_mem,
                run_mem=run_mem,
                stop_mem=inst.mem - run_mem,
                dsk=inst.dsk,
                vcpus=0 if inst.offline else inst.vcpus,
                all_vcpus=inst.vcpus,
                su=inst.spindle_use if local else 0,
                res=inst.mem if inst.reserves else 0,
                excl=tuple(exclusion_tags(inst, excl_prefixes)),
                load=(inst.util.cpu, inst.util.mem, inst.util.dsk, inst.util.net),
                dsrd=frozenset(t for t in inst.tags if any(t.startswith(p) for p in dsrd_prefixes)),
            )
            self.insts.append(mine)
            self.p.append(pk)
            self.s.append(sk)
            self.movable.append(why_pinned(cluster, inst) is None)
            self.stopped[pk] += mine.stop_mem
            self.used_cpus[pk] += mine.vcpus
            self.all_vcpus[pk] += mine.all_vcpus
            self.ispind[pk] += mine.su
            self.n_pri[pk] += 1
            self.ptags[pk].update(mine.excl)
            self._load(pk, mine, 1, primary=True)
            if sk >= 0:
                self._load(sk, mine, 1, primary=False)
                self.ispind[sk] += mine.su
                self.n_sec[sk] += 1
                row = self.rows[sk]
                row[pk] = row.get(pk, 0) + mine.res

    def _forthcoming(
        self, inst: BInstance, pk: int, sk: int, excl_prefixes: tuple[str, ...]
    ) -> None:
        """A forthcoming instance stays where it is and counts as no instance,
        except in the primary's exclusion tags (htools' pTags) and its free
        memory "forth" (as a stopped primary's)."""
        excl = tuple(exclusion_tags(inst, excl_prefixes))
        self.insts.append(WorkInstance(inst.name, 0, 0, 0, 0, 0, 0, 0, 0, excl))
        self.p.append(pk)
        self.s.append(sk)
        self.movable.append(False)
        self.stopped[pk] += inst.mem
        self.ptags[pk].update(excl)

    def clone(self) -> Work:
        """An independent copy, as `Work(cluster, avoid)` of the same cluster
        gives it after the same moves (figures that moves change are copied,
        the rest shared)."""
        new = copy.copy(self)
        new.f_mem = self.f_mem.copy()
        new.f_dsk = self.f_dsk.copy()
        new.stopped = self.stopped.copy()
        new.used_cpus = self.used_cpus.copy()
        new.all_vcpus = self.all_vcpus.copy()
        new.ispind = self.ispind.copy()
        new.n_pri = self.n_pri.copy()
        new.n_sec = self.n_sec.copy()
        new.rows = [row.copy() for row in self.rows]
        new.ptags = [tags.copy() for tags in self.ptags]
        new.p = self.p.copy()
        new.s = self.s.copy()
        new.fixed_sp = self.fixed_sp.copy()
        new.c_free = self.c_free.copy()
        new.r_mem = self.r_mem.copy()
        new.r2 = self.r2.copy()
        new.loc_excl = self.loc_excl.copy()
        new.vals = self.vals.copy()
        new.loads = [load.copy() for load in self.loads]
        new.version = self.version.copy()
        return new

    # ---------------------------------------------------------------- values

    def _values(self, k: int) -> tuple[float, ...]:
        return self.node_values(
            k,
            self.f_mem[k],
            self.stopped[k],
            self.f_dsk[k],
            self.used_cpus[k],
            self.ispind[k],
            self.n_pri[k],
            self.n_sec[k],
            self.r_mem[k],
        )

    def node_values(
        self,
        k: int,
        f_mem: int,
        stopped: int,
        f_dsk: int,
        used_cpus: int,
        ispind: int,
        n_pri: int,
        n_sec: int,
        r_mem: int,
    ) -> tuple[float, ...]:
        t_mem = self.t_mem[k]
        t_dsk = self.t_dsk[k]
        sden = self.sden[k]
        return (
            (f_mem - self.over[k]) / t_mem,
            (f_mem - stopped) / t_mem,
            1.0 if t_dsk == 0 else f_dsk / t_dsk,
            r_mem / t_mem,
            used_cpus / self.t_cpu[k] / self.speed[k],
            float(n_pri),
            float(n_pri + n_sec),
            ispind / sden if sden else (math.nan if ispind == 0 else math.inf),
        )

    def node_change(
        self,
        k: int,
        dfm: int,
        dstop: int,
        ddsk: int,
        dcpu: int,
        dsp: int,
        dnp: int,
        dns: int,
        new_r: int,
    ) -> tuple[tuple[float, ...], tuple[float, ...], float]:
        """Node k's scored values before and after a change (free memory, stopped
        memory, free disk, used CPUs, spindles, primaries, secondaries by the given
        amounts; reservation set to `new_r`), and the change of the components
        summed over nodes (N+1 count, total reservation). An offline node has no
        scored values: ((), (), the change of the offline counts)."""
        np_old, ns_old = self.n_pri[k], self.n_sec[k]
        np_new, ns_new = np_old + dnp, ns_old + dns
        if not self.online[k]:
            return (), (), W_OFF_ALL * (dnp + dns) + W_OFF_PRI * dnp
        f_new = self.f_mem[k] + dfm
        old = self.vals[k]
        new = self.node_values(
            k,
            f_new,
            self.stopped[k] + dstop,
            self.f_dsk[k] + ddsk,
            self.used_cpus[k] + dcpu,
            self.ispind[k] + dsp,
            np_new,
            ns_new,
            new_r,
        )
        scalar = W_RTOTAL * (new[3] - old[3])
        fail_old = self.f_mem[k] < self.r_mem[k]
        fail_new = f_new < new_r
        if fail_old or fail_new:
            scalar += W_N1 * ((np_new + ns_new) * fail_new - (np_old + ns_old) * fail_old)
        return old, new, scalar

    def total(self) -> float:
        """The exact current score, from the per-node values (two-pass)."""
        on = self.online_idx
        tot = 0.0
        n = len(on)
        for m in range(NM):
            if self.util and m in LOAD_METRICS:
                continue
            xs = [self.vals[k][m] for k in on]
            mean = sum(xs) / n
            tot += M_WEIGHT[m] * math.sqrt(sum((x - mean) * (x - mean) for x in xs) / n)
        if self.util:
            for j in range(4):
                xs = [self.loads[k][j] for k in on]
                mean = sum(xs) / n
                tot += LOAD_WEIGHT[j] * math.sqrt(sum((x - mean) * (x - mean) for x in xs) / n)
        for k in range(len(self.names)):
            if self.online[k]:
                if self.f_mem[k] < self.r_mem[k]:
                    tot += W_N1 * (self.n_pri[k] + self.n_sec[k])
                tot += W_RTOTAL * self.vals[k][3]
                tot += W_TAGS * (sum(self.ptags[k].values()) - len(self.ptags[k]))
            else:
                tot += W_OFF_ALL * (self.n_pri[k] + self.n_sec[k]) + W_OFF_PRI * self.n_pri[k]
        if self.has_locs or self.has_dsrd:
            for i, mine in enumerate(self.insts):
                pk, sk = self.p[i], self.s[i]
                if self.online[pk] and sk >= 0:
                    tot += W_LOC * len(self.locs[pk] & self.locs[sk])
                tot += self.missed(mine, pk)
            tot += W_LOC_EXCL * (sum(self.loc_excl.values()) - len(self.loc_excl))
        return tot

    # ---------------------------------------------------------------- moving

    def new_r(self, k: int, dec: int, dec_by: int, inc: int, inc_by: int) -> int:
        """r_mem of node k once peer `dec` reserves `dec_by` less and peer `inc`
        `inc_by` more (-1: none)."""
        row = self.rows[k]
        r = self.r_mem[k]
        if dec >= 0 and dec_by:
            cur = row.get(dec, 0)
            if cur == r:
                r = max(cur - dec_by, self.r2[k])
        if inc >= 0:
            r = max(r, row.get(inc, 0) + inc_by)
        return r

    def apply(self, i: int, new_p: int, new_s: int) -> None:
        inst = self.insts[i]
        old_p, old_s = self.p[i], self.s[i]
        touched = {old_p, old_s, new_p, new_s}
        # take the instance off
        self._pri(old_p, inst, -1)
        self._sec(old_s, old_p, inst, -1)
        self._pri(new_p, inst, +1)
        self._sec(new_s, new_p, inst, +1)
        self.p[i], self.s[i] = new_p, new_s
        for k in touched:
            self.version[k] += 1
            row = self.rows[k]
            for peer in [q for q, v in row.items() if v == 0]:
                del row[peer]
            self.r_mem[k] = max(row.values(), default=0)
            self.r2[k] = _second(row)
            self.vals[k] = self._values(k)

    def missed(self, inst: WorkInstance, k: int) -> float:
        """The weighted location score of the instance's desired locations its
        primary on node k is not in (htools count it on online nodes only)."""
        if not inst.dsrd or not self.online[k]:
            return 0.0
        return W_LOC * (len(inst.dsrd) - len(inst.dsrd & self.locs[k]))

    def tags_clash(self, i: int, k: int) -> bool:
        """Whether making node k instance i's primary would put it beside a
        primary that shares one of its exclusion tags (anti-affinity, which
        hbal and hail refuse as FailTags). An instance whose primary is offline
        is exempt, as Ganeti's forced moves off an offline node are."""
        excl = self.insts[i].excl
        if not excl or not self.online[self.p[i]]:
            return False
        tags = self.ptags[k]
        return any(tags.get(e, 0) > 0 for e in excl)

    def _pri(self, k: int, inst: WorkInstance, sign: int) -> None:
        self.f_mem[k] -= sign * inst.run_mem
        self.c_free[k] -= sign * inst.mem
        self.stopped[k] += sign * inst.stop_mem
        self.f_dsk[k] -= sign * inst.dsk
        self.used_cpus[k] += sign * inst.vcpus
        self.all_vcpus[k] += sign * inst.all_vcpus
        self.ispind[k] += sign * inst.su
        self.n_pri[k] += sign
        self._load(k, inst, sign, primary=True)
        if not inst.excl:
            return
        if sign > 0:
            self.ptags[k].update(inst.excl)
        else:
            self.ptags[k].subtract(inst.excl)
            for e in inst.excl:
                if self.ptags[k][e] <= 0:
                    del self.ptags[k][e]
        if self.online[k]:
            for loc in self.locs[k]:
                for e in inst.excl:
                    self.loc_excl[(loc, e)] += sign
                    if self.loc_excl[(loc, e)] <= 0:
                        del self.loc_excl[(loc, e)]

    def _load(self, k: int, inst: WorkInstance, sign: int, *, primary: bool) -> None:
        """A primary adds all four of its weights to the node's loads, a
        secondary its disk weight (htools' setPri, setSec)."""
        if not self.util:
            return
        load, u = self.loads[k], inst.load
        if primary:
            load[0] += sign * u[0]
            load[1] += sign * u[1]
            load[3] += sign * u[3]
        load[2] += sign * u[2]

    def _sec(self, k: int, peer: int, inst: WorkInstance, sign: int) -> None:
        self.f_dsk[k] -= sign * inst.dsk
        self.ispind[k] += sign * inst.su
        self.n_sec[k] += sign
        self._load(k, inst, sign, primary=False)
        row = self.rows[k]
        row[peer] = row.get(peer, 0) + sign * inst.res


def why_pinned(cluster: BCluster, inst: BInstance) -> str | None:
    """Why the balancer leaves the instance where it is, or None when it may
    move it (hbal moves the same instances, DRBD ones; it also fails over
    externally mirrored ones, which corral does not run)."""
    if inst.forthcoming:
        return "forthcoming (not created yet)"
    if inst.disk_template != MIRRORED_TEMPLATE:
        return f"disk template {inst.disk_template} (only drbd instances move)"
    if inst.snode is None or inst.snode == inst.pnode:
        return "drbd without a secondary node"
    if not inst.auto_balance:
        return "auto_balance is off"
    if inst.name in cluster.pinned:
        return cluster.pinned[inst.name]
    return None


def exactly_modelled(cluster: BCluster) -> str | None:
    """What of the cluster the search's working model does not score exactly
    (its plans are then weighed by the exact score, `reactors.htools.score`),
    or None when `Work.total` is the score."""
    if any(n.exclusive_storage for n in cluster.nodes):
        return "exclusive storage"
    if any(i.forthcoming for i in cluster.instances):
        return "forthcoming instances"
    return None


def _second(row: dict[int, int]) -> int:
    """The largest value of `row` once one occurrence of its maximum is left out."""
    best = second = 0
    for v in row.values():
        if v > best:
            best, second = v, best
        elif v > second:
            second = v
    return second
