"""Each node's load as the allocator counts it: memory of the primaries it runs
(stopped ones too when the policy reserves their memory), disk of every copy it
holds, the primaries' vcpus, exclusion tags, and for N+1 the memory of the
instances each peer would fail over onto it. `corral status` shows these per node;
the allocator (`reactors.placement.allocator`) places by them.

Kept apart from the allocator so that a report reads the loads without importing
the scoring and htools models it needs. Pure: no I/O, no logging; must not score
or choose anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from events.ids import InstanceName, NodeName
from events.specs import PowerState
from events.state import ClusterState


@dataclass
class NodeLoad:
    name: NodeName
    mem_total: int
    disk_total: int
    cpus: int
    host_cpus: int = 1
    mem_primary: int = 0
    disk_used: int = 0
    vcpus_primary: int = 0
    # peer -> memory of instances with primary `peer` and secondary this node
    secondary_for: dict[NodeName, int] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    exclusion: Counter[str] = field(default_factory=Counter)
    group: str = "default"

    @property
    def mem_free(self) -> int:
        return self.mem_total - self.mem_primary

    def n1_need(self) -> int:
        return max(self.secondary_for.values(), default=0)


def loads(state: ClusterState, *, exclude: InstanceName | None = None) -> dict[NodeName, NodeLoad]:
    prefixes = state.desired.policy.exclusion_tag_prefixes
    reserve = state.desired.policy.reserve_stopped_memory
    result = {
        name: NodeLoad(
            name=name,
            mem_total=spec.memory_mib - spec.host_memory_mib,
            disk_total=spec.disk_mib,
            cpus=spec.cpus,
            host_cpus=spec.host_cpus,
            tags=spec.tags,
            group=spec.group,
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
            if inst.power == PowerState.RUNNING or reserve:
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
