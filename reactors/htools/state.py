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
tags carry over. What the event model has no field for, the spindle limits,
`spindle_room` gives beside the state, for the allocator to keep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
from reactors.htools.loaded import LoadedNode, load
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


# What htools' strict allocation leaves on a node at the least, in MiB: its
# checks are strict (Node.addPriEx: `new_free_mem <= 0`, `new_dsk <= 0`,
# `new_free_mem <= rMem` refused; addSecExEx: `new_dsk <= 0`, `unallocated <=
# new_rmem` refused), so on integer MiB a placement must leave 1 MiB of free
# memory (above the N+1 reservation) and of free disk; corral's own rule
# leaves 0.
HTOOLS_KEEP_FREE_MIB = 1

# The refusals past a node's spindle room: the spindle-ratio policy (htools
# refuse it as FailDisk, Node.addPriEx/addSecExEx: `new_inst_sp > hiSpindles`;
# corral names the rule), and exclusive storage's free spindles (FailSpindles,
# htools' own name).
FAIL_SPINDLE_RATIO = "FailSpindleRatio"
FAIL_SPINDLES = "FailSpindles"


@dataclass(frozen=True, slots=True, kw_only=True)
class SpindleRoom:
    """How many more instance disk copies (a DRBD instance puts one on its
    primary and one on its secondary) a node may take before htools refuse it,
    each copy of spindle use 1 and one spindle, as hspace's spec instances are;
    `kind`: the refusal once there is none left."""

    copies: int
    kind: str


def spindle_room(*, cluster: BCluster) -> dict[NodeName, SpindleRoom]:
    """Per node, by corral's name, the copies it may still take (Ganeti 3.0.2's
    Node.addPriEx/addSecExEx in strict mode, what hspace and hail allocate with).
    Without exclusive storage, the spindle-ratio policy: the spindle use of the
    instances with local storage on the node (primaries and secondaries,
    forthcoming ones included in the "forth" figure, both must hold) may not
    exceed `spindle_ratio` (its group's policy) times the node's spindles. With
    exclusive storage, the spindle use is not counted; its free spindles may
    not go below 0. Nodes absent have no limit: a cluster whose nodes declare
    no spindles (`BCluster.spindle_policy` off, corral's own) gives none."""
    if not cluster.spindle_policy:
        return {}
    return {NodeName(_safe(name)): _room(rec) for name, rec in load(cluster).items()}


def _room(rec: LoadedNode) -> SpindleRoom:
    if rec.node.exclusive_storage:
        free = min(rec.node.free_spindles, rec.f_spindles_forth)
        return SpindleRoom(copies=max(0, free), kind=FAIL_SPINDLES)
    used = max(rec.inst_spindles, rec.inst_spindles_forth)
    return SpindleRoom(copies=max(0, math.floor(rec.hi_spindles - used)), kind=FAIL_SPINDLE_RATIO)
