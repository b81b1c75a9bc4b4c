"""Small folded states for planner tests: nodes a, b, c, the instance `web`, and
observations built from a few fields. Pure.
"""

from __future__ import annotations

from dataclasses import replace

from events.ids import InstanceName, NodeName
from events.model import (
    DiskPlacement,
    DrbdPeerObs,
    DrbdResourceObs,
    NodeFacts,
    NodeHealth,
    PlacementKind,
    VolumeObs,
)
from events.specs import DesiredCluster, DiskSpec, InstanceSpec, NodeSpec, PowerState
from events.state import ClusterState, NodeObservation, Placement

NOW = 1000.0


def node(name: NodeName) -> NodeSpec:
    return NodeSpec(name=name, address="127.0.0.1", memory_mib=24576, disk_mib=747520, cpus=8)


def facts(name: str) -> NodeFacts:
    return NodeFacts(
        hostname=name, cpus=8, memory_total_mib=24576, memory_free_mib=20000, boot_id="x"
    )


A, B, C = NodeName("a"), NodeName("b"), NodeName("c")


WEB = InstanceName("web")


def online(name: str, **kw: object) -> NodeObservation:
    base = NodeObservation(
        facts=facts(name), health=NodeHealth.ONLINE, observed_at=NOW - 1, health_since=0
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def res(
    role: str,
    disk: str,
    peer: str,
    conn: str = "Connected",
    peer_role: str = "Secondary",
    peer_disk: str = "UpToDate",
) -> DrbdResourceObs:
    return DrbdResourceObs(
        name="web-d0",
        role=role,
        disk=disk,
        minor=0,
        peers=(
            DrbdPeerObs(
                peer=peer,
                connection=conn,
                peer_role=peer_role,
                peer_disk=peer_disk,
                replication="Established",
            ),
        ),
    )


LV = (VolumeObs(vg="corral", name="web-d0", size_mib=10240),)


def state(
    observed: dict[NodeName, NodeObservation],
    *,
    power: PowerState = PowerState.RUNNING,
    primary: NodeName = A,
    secondary: NodeName = B,
    superseded: NodeName | None = None,
) -> ClusterState:
    spec = InstanceSpec(
        name=WEB, memory_mib=1024, vcpus=1, disks=(DiskSpec(size_mib=10240),), power=power
    )
    return ClusterState(
        revision=10,
        desired=DesiredCluster(
            name="t", nodes={n: node(n) for n in (A, B, C)}, instances={WEB: spec}
        ),
        placements={
            WEB: Placement(
                primary=primary,
                secondary=secondary,
                disks=(DiskPlacement(index=0, size_mib=10240, minor=0, port=11000),),
                kind=PlacementKind.INITIAL,
                revision=5,
                superseded=superseded,
            )
        },
        observed=observed,
        versions={"instance/web": 1},
    )
