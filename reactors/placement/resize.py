"""Whether a placed instance may change size where it is (memory, vCPUs, disks), as
Ganeti's `gnt-instance modify` checks it: the primary must hold the new memory and
stay inside the vCPU ratio, both nodes must hold the new disks, and the secondary
must still be able to take over the primary's instances (N+1). Every refusal names
the field, the node and the numbers; the N+1 effect is described whether it breaks
or not, so a person deciding to force knows what they trade.

Pure: no I/O, no logging. Counting is the allocator's (`loads`): declared sizes, a
stopped instance's memory held only when the policy reserves it. A change's new
memory is counted on the primary even while the instance is stopped: it is the
memory the next start needs there.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.ids import InstanceName
from events.specs import InstanceSpec
from events.state import ClusterState
from reactors.placement.node_loads import NodeLoad, loads


@dataclass(frozen=True, slots=True, kw_only=True)
class ResizeVerdict:
    """`refusals` are why the change does not fit (empty: it fits); `effects` say
    what it does to N+1 on the secondary, in words."""

    refusals: tuple[str, ...] = ()
    effects: tuple[str, ...] = ()

    @property
    def fits(self) -> bool:
        return not self.refusals


def _mib(value: int) -> str:
    return f"{value / 1024:g}G" if value % 512 == 0 and abs(value) >= 1024 else f"{value}M"


def check_resize(*, state: ClusterState, old: InstanceSpec, new: InstanceSpec) -> ResizeVerdict:
    """Check `new` against the nodes `old` (the same instance) is placed on; an
    instance not placed yet fits (the allocator checks it when it places it)."""
    placement = state.placements.get(InstanceName(old.name))
    if placement is None:
        return ResizeVerdict()
    all_loads = loads(state, exclude=InstanceName(old.name))
    p, s = all_loads.get(placement.primary), all_loads.get(placement.secondary)
    if p is None or s is None:
        return ResizeVerdict()
    refusals: list[str] = []
    policy = state.desired.policy
    if new.memory_mib > old.memory_mib and p.mem_free < new.memory_mib:
        refusals.append(
            f"memory: {_mib(new.memory_mib)} does not fit on primary {p.name}: it has "
            f"{_mib(p.mem_free)} free besides this instance "
            f"(would leave {_mib(p.mem_free - new.memory_mib)})"
        )
    limit = p.cpus * policy.vcpu_ratio
    if new.vcpus > old.vcpus and p.host_cpus + p.vcpus_primary + new.vcpus > limit:
        refusals.append(
            f"vcpus: {new.vcpus} on primary {p.name} exceeds the vCPU ratio "
            f"{policy.vcpu_ratio:g}: {p.host_cpus + p.vcpus_primary + new.vcpus} of "
            f"{limit:g} ({p.cpus} CPUs, {p.host_cpus} kept by the host)"
        )
    if new.disk_mib > old.disk_mib:
        for node in (p, s):
            free = node.disk_total - node.disk_used
            if free < new.disk_mib:
                refusals.append(
                    f"disks: {_mib(new.disk_mib)} in all do not fit on {node.name}: "
                    f"it has {_mib(free)} free besides this instance"
                )
    n1_refusal, effect = _n1_effect(old=old, new=new, p=p, s=s)
    if n1_refusal and policy.n_plus_one:
        refusals.append(n1_refusal)
    return ResizeVerdict(refusals=tuple(refusals), effects=(effect,) if effect else ())


def _n1_effect(
    *, old: InstanceSpec, new: InstanceSpec, p: NodeLoad, s: NodeLoad
) -> tuple[str, str]:
    """(refusal or "", effect or "") for the secondary taking over the primary."""
    if new.memory_mib == old.memory_mib or not new.auto_balance:
        return "", ""
    before = s.secondary_for.get(p.name, 0) + (old.memory_mib if old.auto_balance else 0)
    after = s.secondary_for.get(p.name, 0) + new.memory_mib
    effect = (
        f"N+1: if {p.name} fails, {s.name} must start {_mib(after)} of its instances "
        f"(was {_mib(before)}); {s.name} has {_mib(s.mem_free)} free"
    )
    if after > s.mem_free and after > before:
        return (
            f"memory: N+1 breaks on secondary {s.name}: if {p.name} fails it must start "
            f"{_mib(after)} and has {_mib(s.mem_free)} free",
            effect,
        )
    return "", effect
