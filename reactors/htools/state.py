"""An htools cluster (parsed from `hbal -t` text) as a corral ClusterState, so the
same planners (placement, capacity, reboot groups) run on a snapshot file the way
htools run on it offline.

Pure: no I/O, no logging. Node free memory and disk are recomputed from the instances
(corral's model), so a file whose f_mem/f_dsk include usage htools cannot attribute to
an instance is read as emptier than htools read it; offline/drained and tags carry
over.
"""

from __future__ import annotations

from events.ids import EventId, GroupName, InstanceName, NodeName
from events.model import (
    DiskPlacement,
    Event,
    InstanceDeclared,
    InstancePlaced,
    NodeDeclared,
    PlacementKind,
    PolicySet,
)
from events.projection import fold_all
from events.specs import ClusterPolicy, DiskSpec, InstanceSpec, NodeSpec, PowerState
from events.state import ClusterState
from reactors.htools.model import BCluster
from reactors.naming import MINOR_BASE, PORT_BASE


def _safe(name: str) -> str:
    """htools names are FQDNs in any case; corral names are lowercase."""
    return name.lower()


def to_state(*, cluster: BCluster, name: str = "htools") -> ClusterState:
    exclusion = tuple(f"{p}:" for p in cluster.exclusion_prefixes())
    domains = tuple(f"{p}:" for p in cluster.location_prefixes())
    events: list[Event] = [
        PolicySet(
            id=EventId("htools-policy"),
            time=0.0,
            actor="htools",
            cluster_name=name,
            policy=ClusterPolicy(
                vcpu_ratio=cluster.vcpu_ratio,
                exclusion_tag_prefixes=exclusion,
                failure_domain_prefixes=domains,
            ),
        )
    ]
    for node in cluster.nodes:
        events.append(
            NodeDeclared(
                id=EventId(f"htools-node-{node.name}"),
                time=0.0,
                actor="htools",
                spec=NodeSpec(
                    name=NodeName(_safe(node.name)),
                    address=_safe(node.name),
                    memory_mib=int(node.t_mem),
                    host_memory_mib=node.n_mem,
                    disk_mib=int(node.t_dsk),
                    cpus=int(node.t_cpu),
                    host_cpus=node.os_cpus,
                    group=GroupName(_safe(node.group) or "default"),
                    tags=frozenset(node.tags),
                    drained=node.drained,
                    offline=node.offline,
                ),
            )
        )
    minor, port = MINOR_BASE, PORT_BASE
    for inst in cluster.instances:
        if inst.snode is None:
            continue  # only DRBD instances are corral's
        iname = InstanceName(_safe(inst.name))
        spec = InstanceSpec(
            name=iname,
            memory_mib=inst.mem,
            vcpus=inst.vcpus,
            disks=(DiskSpec(size_mib=inst.dsk),),
            tags=frozenset(inst.tags),
            power=PowerState.RUNNING if inst.running else PowerState.STOPPED,
            auto_balance=inst.auto_balance,
        )
        events.append(
            InstanceDeclared(
                id=EventId(f"htools-inst-{iname}"), time=0.0, actor="htools", spec=spec
            )
        )
        events.append(
            InstancePlaced(
                id=EventId(f"htools-placed-{iname}"),
                time=0.0,
                actor="htools",
                instance=iname,
                primary=NodeName(_safe(inst.pnode)),
                secondary=NodeName(_safe(inst.snode)),
                disks=(DiskPlacement(index=0, size_mib=inst.dsk, minor=minor, port=port),),
                kind=PlacementKind.INITIAL,
            )
        )
        minor, port = minor + 1, port + 1
    return fold_all((1, e) for e in events)
