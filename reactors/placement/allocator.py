"""Placement from the folded state: which nodes may take an instance (online, not
drained or offline, healthy, enough memory, disk and vcpu ratio, N+1 kept, failure
domains apart, the host's own CPUs counted in the vcpu ratio) and, among those, the
pair that leaves the lowest Ganeti cluster score (hbal's `compCV`, exactly as
`reactors.htools.score` computes it), the way Ganeti's hail answers an allocate
request: every valid pair is tried and the lowest resulting score wins. As in hail,
the allocator never puts a primary beside one that shares an exclusion tag
(FailTags); a primary the user pinned is placed as asked, and the conflict is
scored (`pri_tags_score`). On an htools file the caller may give each node's
spindle room (`reactors.htools.state.spindle_room`): a pair whose primary or
secondary has no room left is refused (FailSpindleRatio, FailSpindles); and
`keep_free_mib`, what free memory (above the N+1 reservation) and free disk
must stay after placing (htools: 1 MiB, `reactors.htools.state.HTOOLS_KEEP_FREE_MIB`;
corral's own rule: 0). Refusals say which resource failed on how many nodes,
the way hail reports them.

Pure: no I/O, no logging. N+1 follows htools: a node X must have free memory for the
largest sum of memory of instances whose primary is one peer P and secondary X. Ties
(scores within 1e-10) go to the lowest primary name, then the lowest secondary name.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from events.ids import InstanceName, NodeName
from events.specs import InstanceSpec, PowerState
from events.state import ClusterState
from reactors.htools.model import from_state
from reactors.htools.state import SpindleRoom
from reactors.placement.node_loads import NodeLoad, loads
from reactors.placement.score_delta import Baseline, NewInstance, prepare

# Scores closer than this are a tie, broken by node names (the incremental score
# and a full re-scoring agree far closer than this).
TIE = 1e-10


@dataclass(frozen=True, slots=True, kw_only=True)
class PairChoice:
    primary: NodeName | None = None
    secondary: NodeName | None = None
    score: float | None = None
    reason: str = ""
    refusal: str | None = None
    failures: tuple[tuple[str, int], ...] = ()


def unusable(state: ClusterState, node: NodeName) -> str | None:
    spec = state.desired.nodes[node]
    if spec.offline:
        return "FailOffline"
    if spec.drained:
        return "FailDrained"
    obs = state.observed.get(node)
    if obs is not None and not obs.health.healthy:
        return "FailHealth"
    return None


def _domains(tags: frozenset[str], prefixes: tuple[str, ...]) -> set[str]:
    return {t for t in tags if prefixes and t.startswith(prefixes)}


def _fits(
    *,
    state: ClusterState,
    spec: InstanceSpec,
    p: NodeLoad,
    s: NodeLoad,
    room: Mapping[NodeName, SpindleRoom] | None = None,
    keep: int = 0,
) -> str | None:
    policy = state.desired.policy
    if p.group != s.group:
        # a DRBD pair lives in one node group (Ganeti's, and hail's, rule)
        return "FailGroup"
    # the memory the primary holds for it: a stopped instance's only when the
    # policy reserves it (htools count only running instances' memory)
    hold = (
        spec.memory_mib if spec.power == PowerState.RUNNING or policy.reserve_stopped_memory else 0
    )
    if p.mem_free - keep < hold:
        return "FailMem"
    disk = _disk_refusal(spec=spec, p=p, s=s, room=room, keep=keep)
    if disk is not None:
        return disk
    # Ganeti's vCPU ratio counts the host's own CPUs as used.
    if p.host_cpus + p.vcpus_primary + spec.vcpus > p.cpus * policy.vcpu_ratio:
        return "FailCPU"
    # Anti-affinity, as hail: a primary the allocator chooses never joins one that
    # shares an exclusion tag (a primary the user pinned is the user's choice).
    prefixes = policy.exclusion_tag_prefixes
    if (
        prefixes
        and not spec.primary
        and any(p.exclusion[t] > 0 for t in spec.tags if t.startswith(prefixes))
    ):
        return "FailTags"
    dom = policy.failure_domain_prefixes
    if dom and _domains(p.tags, dom) & _domains(s.tags, dom):
        return "FailDomain"
    if policy.n_plus_one and not _keeps_n1(spec=spec, p=p, s=s, hold=hold + keep, keep=keep):
        return "FailN1"
    return None


def _disk_refusal(
    *,
    spec: InstanceSpec,
    p: NodeLoad,
    s: NodeLoad,
    room: Mapping[NodeName, SpindleRoom] | None,
    keep: int,
) -> str | None:
    """FailDisk when either node lacks the disk (`keep` MiB of it set aside),
    else the spindle refusal of the first node (the primary, as htools check
    it first) with no room for one more disk copy."""
    for node in (p, s):
        if node.disk_total - node.disk_used - keep < spec.disk_mib:
            return "FailDisk"
    for node in (p, s):
        limit = room.get(node.name) if room else None
        if limit is not None and limit.copies < 1:
            return limit.kind
    return None


def _keeps_n1(*, spec: InstanceSpec, p: NodeLoad, s: NodeLoad, hold: int, keep: int = 0) -> bool:
    """N+1 on both nodes with the instance placed, `keep` MiB to spare on the
    secondary (`hold`, what the primary holds for it, includes the primary's)."""
    # The new instance adds to what s must hold if p dies...
    need_s = s.secondary_for.get(p.name, 0) + (spec.memory_mib if spec.auto_balance else 0)
    # ...and takes memory p needs for the instances it is secondary for.
    return max(need_s, s.n1_need()) <= s.mem_free - keep and p.n1_need() <= p.mem_free - hold


def _unusable_for(
    state: ClusterState, spec: InstanceSpec, node: NodeName, lacking: list[str]
) -> str | None:
    """`unusable`, or FailBridge when the node lacks one of the instance's bridges
    (either node of a pair may run it: both need them); the why goes to `lacking`."""
    why = unusable(state, node)
    if why is None and spec.nics:
        missing = missing_bridges(state=state, spec=spec, node=node)
        if missing:
            lacking.append(missing)
            why = "FailBridge"
    return why


def _lacking(lacking: list[str]) -> str:
    more = f"; and {len(lacking) - 3} more" if len(lacking) > 3 else ""
    return f" ({'; '.join(lacking[:3])}{more})" if lacking else ""


def choose_pair(
    *,
    state: ClusterState,
    spec: InstanceSpec,
    spindle_room: Mapping[NodeName, SpindleRoom] | None = None,
    keep_free_mib: int = 0,
) -> PairChoice:
    """The pair hail would choose for `spec`, or the refusal; `spindle_room`:
    the disk copies each node may still take in `state` (no limit where a node
    is absent); `keep_free_mib`: the memory and disk each node must have left
    after placing (see the module's docstring)."""
    all_loads = loads(state, exclude=spec.name)
    failures: Counter[str] = Counter()
    usable = []
    lacking: list[str] = []
    for node in sorted(all_loads):
        why = _unusable_for(state, spec, node, lacking)
        if why:
            failures[why] += 1
        else:
            usable.append(node)
    prim_nodes = [spec.primary] if spec.primary else usable
    sec_nodes = [spec.secondary] if spec.secondary else usable
    pairs: list[tuple[NodeName, NodeName]] = []
    for pn in prim_nodes:
        if pn not in all_loads or pn not in usable:
            failures["FailPinned"] += 1
            continue
        for sn in sec_nodes:
            if sn == pn or sn not in all_loads or sn not in usable:
                continue
            why = _fits(
                state=state,
                spec=spec,
                p=all_loads[pn],
                s=all_loads[sn],
                room=spindle_room,
                keep=keep_free_mib,
            )
            if why:
                failures[why] += 1
                continue
            pairs.append((pn, sn))
    if not pairs:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(failures.items())) or "no nodes"
        return PairChoice(
            refusal=f"no node pair can take {spec.name} "
            f"({spec.memory_mib}M, {spec.disk_mib}M disk, {spec.vcpus} vcpus): {detail}"
            + _lacking(lacking),
            failures=tuple(sorted(failures.items())),
        )
    base = _baseline(state, without=spec.name)
    scored = base.pair_scores(inst=new_instance(spec), pairs=pairs)
    score, best_p, best_s = _best(scored)
    return PairChoice(
        primary=NodeName(best_p),
        secondary=NodeName(best_s),
        score=score,
        reason=f"allocator: {best_p}/{best_s} of {len(pairs)} possible pairs, "
        f"Ganeti cluster score after {score:.6f} (was {base.total:.6f})",
    )


def _baseline(state: ClusterState, *, without: InstanceName | None = None) -> Baseline:
    """The prepared htools model of `state`, without instance `without` (placed or
    not) so that it can be placed afresh."""
    if without is not None and without in state.placements:
        state = replace(
            state, placements={k: v for k, v in state.placements.items() if k != without}
        )
    return prepare(from_state(state=state))


def new_instance(spec: InstanceSpec) -> NewInstance:
    """The instance as `reactors.htools.model.from_state` will see it once placed."""
    return NewInstance(
        mem=spec.memory_mib,
        dsk=spec.disk_mib,
        vcpus=spec.vcpus,
        running=spec.power == PowerState.RUNNING,
        auto_balance=spec.auto_balance,
        tags=tuple(sorted(spec.tags)),
    )


def _best(scored: Sequence[tuple[float, str, str]]) -> tuple[float, str, str]:
    """The lowest score; among scores within TIE of it, the lowest names. A score
    that is not a number (a node without memory) ranks last."""

    def key(score: float) -> float:
        return score if not math.isnan(score) else math.inf

    low = min(key(c[0]) for c in scored)
    ties = [c for c in scored if key(c[0]) <= low + TIE]
    return min(ties, key=lambda c: (c[1], c[2]))


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
        policy = replace(state.desired.policy, n_plus_one=False)
        state = replace(state, desired=replace(state.desired, policy=policy))
    placement = state.placements[instance]
    spec = state.desired.instances[instance]
    all_loads = loads(state, exclude=instance)
    p = all_loads.get(placement.primary)
    if p is None:
        return SecondaryChoice(refusal=f"primary {placement.primary} is not a declared node")
    failures: Counter[str] = Counter()
    targets: list[NodeName] = []
    lacking: list[str] = []
    for sn in sorted(all_loads):
        if sn in (placement.primary, placement.secondary):
            continue
        if target and sn != target:
            continue
        why = _unusable_for(state, spec, sn, lacking)
        if why is None:
            # The primary's own memory stays where it is: only s-side checks.
            why = _fits(state=state, spec=spec, p=_as_if_free(p, spec), s=all_loads[sn])
        if why:
            failures[why] += 1
            continue
        targets.append(sn)
    if not targets:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(failures.items())) or "no other node"
        return SecondaryChoice(
            refusal=f"no node can hold {instance}'s second copy: {detail}" + _lacking(lacking)
        )
    base = _baseline(state)
    current = base.instances.get(instance)
    if current is not None and current.snode is not None:
        scored: list[tuple[float, str, str]] = [
            (base.after_move_secondary(instance=instance, secondary=sn), placement.primary, sn)
            for sn in targets
        ]
    else:
        # Its old secondary is not a declared node, so htools do not see it yet.
        base = _baseline(state, without=instance)
        scored = base.pair_scores(
            inst=new_instance(spec), pairs=[(placement.primary, sn) for sn in targets]
        )
    score, _, best = _best(scored)
    return SecondaryChoice(
        secondary=NodeName(best),
        score=score,
        reason=f"new secondary {best} of {len(targets)} possible nodes, "
        f"Ganeti cluster score after {score:.6f} (was {base.total:.6f})",
    )


def _as_if_free(p: NodeLoad, spec: InstanceSpec) -> NodeLoad:
    """The primary already carries the instance and keeps it: a new secondary
    changes nothing there, so the primary-side checks (memory, vCPUs, its own
    N+1, disk, anti-affinity) pass by construction and only the secondary's are
    made. (A primary over its vCPU ratio after failovers still gets its
    instances a second copy.)"""
    return NodeLoad(
        name=p.name,
        mem_total=max(p.mem_total, spec.memory_mib),
        disk_total=p.disk_used + spec.disk_mib,
        cpus=p.cpus,
        host_cpus=0,
        mem_primary=0,
        disk_used=p.disk_used,
        vcpus_primary=0,
        tags=p.tags,
        group=p.group,
    )


def run_refusal(
    *, state: ClusterState, instance: InstanceName, node: NodeName, incoming_mib: int = 0
) -> str | None:
    """Why `instance` cannot be started on `node` by a migration or failover
    (Ganeti checks the target's free memory before either); None when it can,
    or when it is not meant to run. Memory as the balancer's model counts it
    (`reactors.htools.model.from_state`, htools' f_mem): the node's own, less the
    host's, less that of the running instances whose primary it is, less
    `incoming_mib` (other moves to it under way)."""
    spec = state.desired.instances.get(instance)
    target = state.desired.nodes.get(node)
    if spec is None or target is None or spec.power != PowerState.RUNNING:
        return None
    missing = missing_bridges(state=state, spec=spec, node=node)
    if missing:
        return missing
    used = 0
    for name, placement in state.placements.items():
        other = state.desired.instances.get(name)
        if (
            name != instance
            and placement.primary == node
            and other is not None
            and other.power == PowerState.RUNNING
        ):
            used += other.memory_mib
    free = target.memory_mib - target.host_memory_mib - used - incoming_mib
    if free < spec.memory_mib:
        return (
            f"not enough memory on {node} for {instance}: "
            f"it needs {spec.memory_mib}M, {max(free, 0)}M free"
        )
    return None


def missing_bridges(*, state: ClusterState, spec: InstanceSpec, node: NodeName) -> str | None:
    """Why `node` cannot run `spec`'s NICs: a bridge it lacks (as its probe
    reports; a node whose helper does not report bridges is not refused here, its
    helper refuses the start itself)."""
    obs = state.observed.get(node)
    bridges = obs.facts.bridges if obs is not None and obs.facts is not None else None
    if bridges is None:
        return None
    for i, nic in enumerate(spec.nics):
        if nic.link not in bridges:
            return (
                f"node {node} has no bridge {nic.link!r} for {spec.name}'s nics[{i}].link "
                f"(it has: {', '.join(bridges) or 'none'})"
            )
    return None
