"""Placement from the folded state: which nodes may take an instance (online, not
drained or offline, healthy, enough memory, disk and vcpu ratio, N+1 kept, failure
domains apart) and, among those, the pair that leaves the cluster most balanced.
Refusals say which resource failed on how many nodes, the way hail reports them.

Pure: no I/O, no logging. Comes after `events.projection`; used by
`reactors.placer`. N+1 follows htools: a node X must have free memory for the
largest sum of memory of instances whose primary is one peer P and secondary X.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from events.ids import InstanceName, NodeName
from events.model import NodeHealth
from events.specs import InstanceSpec
from events.state import ClusterState


@dataclass
class NodeLoad:
    name: NodeName
    mem_total: int
    disk_total: int
    cpus: int
    mem_primary: int = 0
    disk_used: int = 0
    vcpus_primary: int = 0
    # peer -> memory of instances with primary `peer` and secondary this node
    secondary_for: dict[NodeName, int] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    exclusion: Counter[str] = field(default_factory=Counter)

    @property
    def mem_free(self) -> int:
        return self.mem_total - self.mem_primary

    def n1_need(self) -> int:
        return max(self.secondary_for.values(), default=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class PairChoice:
    primary: NodeName | None = None
    secondary: NodeName | None = None
    score: float | None = None
    reason: str = ""
    refusal: str | None = None
    failures: tuple[tuple[str, int], ...] = ()


def _usable(state: ClusterState, node: NodeName) -> str | None:
    spec = state.desired.nodes[node]
    if spec.offline:
        return "FailOffline"
    if spec.drained:
        return "FailDrained"
    obs = state.observed.get(node)
    if obs is not None and obs.health in (
        NodeHealth.LOST,
        NodeHealth.FENCED,
        NodeHealth.PARTITIONED,
        NodeHealth.SUSPECT,
    ):
        return "FailHealth"
    return None


def loads(state: ClusterState, *, exclude: InstanceName | None = None) -> dict[NodeName, NodeLoad]:
    prefixes = state.desired.policy.exclusion_tag_prefixes
    result = {
        name: NodeLoad(
            name=name,
            mem_total=spec.memory_mib - spec.host_memory_mib,
            disk_total=spec.disk_mib,
            cpus=spec.cpus,
            tags=spec.tags,
        )
        for name, spec in state.desired.nodes.items()
    }
    for name, placement in state.placements.items():
        if name == exclude:
            continue
        inst = state.desired.instances.get(name)
        if inst is None:
            continue
        p, s = result.get(placement.primary), result.get(placement.secondary)
        if p is not None:
            p.mem_primary += inst.memory_mib
            p.disk_used += inst.disk_mib
            p.vcpus_primary += inst.vcpus
            for tag in inst.tags:
                if tag.startswith(prefixes) and prefixes:
                    p.exclusion[tag] += 1
        if s is not None:
            s.disk_used += inst.disk_mib
            if inst.auto_balance:
                s.secondary_for[placement.primary] = (
                    s.secondary_for.get(placement.primary, 0) + inst.memory_mib
                )
    return result


def _domains(tags: frozenset[str], prefixes: tuple[str, ...]) -> set[str]:
    return {t for t in tags if prefixes and t.startswith(prefixes)}


def _score(all_loads: dict[NodeName, NodeLoad]) -> float:
    """Std-dev of free memory and free disk fractions plus N+1 failures: the part
    of the hbal score that placement moves."""
    mem = [(n.mem_free / n.mem_total) if n.mem_total else 0.0 for n in all_loads.values()]
    disk = [(1 - n.disk_used / n.disk_total) if n.disk_total else 0.0 for n in all_loads.values()]
    n1 = sum(1 for n in all_loads.values() if n.n1_need() > n.mem_free)
    return 0.5 * _std(mem) + 0.5 * _std(disk) + n1


def _std(values: list[float]) -> float:
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _fits(
    *,
    state: ClusterState,
    spec: InstanceSpec,
    p: NodeLoad,
    s: NodeLoad,
) -> str | None:
    policy = state.desired.policy
    if p.mem_free < spec.memory_mib:
        return "FailMem"
    if p.disk_total - p.disk_used < spec.disk_mib or s.disk_total - s.disk_used < spec.disk_mib:
        return "FailDisk"
    if p.vcpus_primary + spec.vcpus > p.cpus * policy.vcpu_ratio:
        return "FailCPU"
    dom = policy.failure_domain_prefixes
    if dom and _domains(p.tags, dom) & _domains(s.tags, dom):
        return "FailDomain"
    if policy.n_plus_one:
        # The new instance adds to what s must hold if p dies...
        need_s = s.secondary_for.get(p.name, 0) + (spec.memory_mib if spec.auto_balance else 0)
        if max(need_s, s.n1_need()) > s.mem_free:
            return "FailN1"
        # ...and takes memory p needs for the instances it is secondary for.
        if p.n1_need() > p.mem_free - spec.memory_mib:
            return "FailN1"
    return None


def choose_pair(*, state: ClusterState, spec: InstanceSpec) -> PairChoice:
    all_loads = loads(state, exclude=spec.name)
    candidates = []
    failures: Counter[str] = Counter()
    usable = []
    for node in sorted(all_loads):
        why = _usable(state, node)
        if why:
            failures[why] += 1
        else:
            usable.append(node)
    prim_nodes = [spec.primary] if spec.primary else usable
    sec_nodes = [spec.secondary] if spec.secondary else usable
    prefixes = state.desired.policy.exclusion_tag_prefixes
    for pn in prim_nodes:
        if pn not in all_loads or pn not in usable:
            failures["FailPinned"] += 1
            continue
        for sn in sec_nodes:
            if sn == pn or sn not in all_loads or sn not in usable:
                continue
            p, s = all_loads[pn], all_loads[sn]
            why = _fits(state=state, spec=spec, p=p, s=s)
            if why:
                failures[why] += 1
                continue
            p.mem_primary += spec.memory_mib
            p.disk_used += spec.disk_mib
            s.disk_used += spec.disk_mib
            s.secondary_for[pn] = s.secondary_for.get(pn, 0) + spec.memory_mib
            conflicts = sum(
                p.exclusion[t] for t in spec.tags if prefixes and t.startswith(prefixes)
            )
            score = _score(all_loads) + 2.0 * conflicts
            p.mem_primary -= spec.memory_mib
            p.disk_used -= spec.disk_mib
            s.disk_used -= spec.disk_mib
            s.secondary_for[pn] -= spec.memory_mib
            if not s.secondary_for[pn]:
                del s.secondary_for[pn]
            candidates.append((score, pn, sn))
    if not candidates:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(failures.items())) or "no nodes"
        return PairChoice(
            refusal=f"no node pair can take {spec.name} "
            f"({spec.memory_mib}M, {spec.disk_mib}M disk, {spec.vcpus} vcpus): {detail}",
            failures=tuple(sorted(failures.items())),
        )
    score, pn, sn = min(candidates)
    return PairChoice(
        primary=pn,
        secondary=sn,
        score=round(score, 6),
        reason=f"allocator: {pn}/{sn} of {len(candidates)} possible pairs, "
        f"balance score {score:.4f}",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SecondaryChoice:
    secondary: NodeName | None = None
    score: float | None = None
    reason: str = ""
    refusal: str | None = None


def choose_new_secondary(
    *,
    state: ClusterState,
    instance: InstanceName,
    target: str | None = None,
    relax_n1: bool = False,
) -> SecondaryChoice:
    """A node for the instance's second copy. With `relax_n1`, N+1 may be broken
    (after a node loss, two copies matter more than spare memory); the caller
    raises an alert when it uses that."""
    if relax_n1:
        from dataclasses import replace

        policy = replace(state.desired.policy, n_plus_one=False)
        state = replace(state, desired=replace(state.desired, policy=policy))
    placement = state.placements[instance]
    spec = state.desired.instances[instance]
    all_loads = loads(state, exclude=instance)
    p = all_loads.get(placement.primary)
    if p is None:
        return SecondaryChoice(refusal=f"primary {placement.primary} is not a declared node")
    failures: Counter[str] = Counter()
    candidates = []
    for sn in sorted(all_loads):
        if sn in (placement.primary, placement.secondary):
            continue
        if target and sn != target:
            continue
        why = _usable(state, sn)
        if why is None:
            # The primary's own memory stays where it is: only s-side checks.
            s = all_loads[sn]
            p.mem_primary += 0
            why = _fits(state=state, spec=spec, p=_as_if_free(p, spec), s=s)
        if why:
            failures[why] += 1
            continue
        s = all_loads[sn]
        s.disk_used += spec.disk_mib
        s.secondary_for[placement.primary] = (
            s.secondary_for.get(placement.primary, 0) + spec.memory_mib
        )
        score = _score(all_loads)
        s.disk_used -= spec.disk_mib
        s.secondary_for[placement.primary] -= spec.memory_mib
        candidates.append((score, sn))
    if not candidates:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(failures.items())) or "no other node"
        return SecondaryChoice(refusal=f"no node can hold {instance}'s second copy: {detail}")
    score, sn = min(candidates)
    return SecondaryChoice(
        secondary=sn, score=round(score, 6), reason=f"new secondary {sn} (score {score:.4f})"
    )


def _as_if_free(p: NodeLoad, spec: InstanceSpec) -> NodeLoad:
    """The primary already carries the instance: check the pair as if it did not."""
    return NodeLoad(
        name=p.name,
        mem_total=p.mem_total,
        disk_total=p.disk_total + spec.disk_mib,
        cpus=p.cpus,
        mem_primary=max(0, p.mem_primary),
        disk_used=p.disk_used,
        vcpus_primary=p.vcpus_primary,
        secondary_for=p.secondary_for,
        tags=p.tags,
    )
