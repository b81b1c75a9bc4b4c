"""An htools cluster (parsed from `hbal -t` text) as a corral ClusterState, so the
same planners (placement, capacity, reboot groups) run on a snapshot file the way
htools run on it offline.

Pure: no I/O, no logging. corral recomputes a node's free memory and disk from its
instances, so what htools count beyond them becomes the host's own: the
memory a node did not report free beyond its records (htools' unaccounted
memory, so that corral's free memory is htools' unallocated memory), and the
memory, disk and vCPUs of the instances corral does not run (other disk
templates than drbd, forthcoming ones). An ADMIN_offline instance reserves
nothing on its secondary, as htools count it. The vCPU ratio is the first
node group's (htools apply group policies to nodes). Offline/drained and
tags carry over.
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
from reactors.htools.loaded import load
from reactors.htools.model import MIRRORED_TEMPLATE, BCluster, BInstance
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
                vcpu_ratio=(
                    cluster.group_policy(cluster.nodes[0].group).vcpu_ratio
                    if cluster.nodes
                    else cluster.vcpu_ratio
                ),
                reserve_stopped_memory=cluster.reserve_stopped,
                exclusion_tag_prefixes=exclusion,
                failure_domain_prefixes=domains,
            ),
        )
    ]
    host_mem, host_cpus, taken_dsk = _not_corrals(cluster)
    loaded = load(cluster)
    for node in cluster.nodes:
        unaccounted = max(0, loaded[node.name].x_mem)
        events.append(
            NodeDeclared(
                id=EventId(f"htools-node-{node.name}"),
                time=0.0,
                actor="htools",
                spec=NodeSpec(
                    name=NodeName(_safe(node.name)),
                    address=_safe(node.name),
                    memory_mib=int(node.t_mem),
                    host_memory_mib=node.n_mem + unaccounted + host_mem.get(node.name, 0),
                    disk_mib=int(node.t_dsk) - taken_dsk.get(node.name, 0),
                    cpus=int(node.t_cpu),
                    host_cpus=node.os_cpus + host_cpus.get(node.name, 0),
                    group=GroupName(_safe(node.group) or "default"),
                    tags=frozenset(node.tags),
                    drained=node.drained,
                    offline=node.offline,
                ),
            )
        )
    minor, port = MINOR_BASE, PORT_BASE
    for inst in cluster.instances:
        if not _corrals(inst) or inst.snode is None:
            continue
        iname = InstanceName(_safe(inst.name))
        spec = InstanceSpec(
            name=iname,
            memory_mib=inst.mem,
            vcpus=inst.vcpus,
            disks=(DiskSpec(size_mib=inst.dsk),),
            tags=frozenset(inst.tags),
            power=PowerState.RUNNING if inst.running else PowerState.STOPPED,
            auto_balance=inst.reserves,
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


def _corrals(inst: BInstance) -> bool:
    """An instance corral runs: drbd with a secondary, not forthcoming."""
    return (
        inst.disk_template == MIRRORED_TEMPLATE
        and inst.snode is not None
        and inst.snode != inst.pnode
        and not inst.forthcoming
    )


def _not_corrals(cluster: BCluster) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Per node, the memory, vCPUs (on primaries) and disk (where stored) of the
    instances corral does not run."""
    mem: dict[str, int] = {}
    cpus: dict[str, int] = {}
    dsk: dict[str, int] = {}
    for inst in cluster.instances:
        if _corrals(inst):
            continue
        if inst.uses_memory or inst.forthcoming:
            mem[inst.pnode] = mem.get(inst.pnode, 0) + inst.mem
        if not inst.offline:
            cpus[inst.pnode] = cpus.get(inst.pnode, 0) + inst.vcpus
        if inst.local_storage:
            for node in {inst.pnode, inst.snode} - {None}:
                assert node is not None
                dsk[node] = dsk.get(node, 0) + inst.dsk
    return mem, cpus, dsk
