"""A converged cluster of any size as the fold would hold it, for benches of reads
and start-up: nodes declared and online, instances declared and placed, each
node's last observation (facts, one LV and one DRBD resource per copy, connected
and UpToDate, a running VM per primary), the steps that built them; and the
events of a live cluster's next moment (one node's probe changed, a few steps).
Pure; writes nothing."""

from __future__ import annotations

from dataclasses import replace

from devtools.demo import seed_instances
from events.ids import InstanceName, NodeName, new_event_id
from events.model import (
    DiskPlacement,
    DrbdPeerObs,
    DrbdResourceObs,
    Event,
    InstanceDeclared,
    InstancePlaced,
    NodeDeclared,
    NodeFacts,
    NodeHealth,
    NodeHealthChanged,
    NodeObserved,
    PlacementKind,
    PolicySet,
    StepStarted,
    StepSucceeded,
    VmObs,
    VolumeObs,
)
from events.projection import fold_all
from events.specs import ClusterPolicy, InstanceSpec, NodeSpec
from events.state import ClusterState


def node_name(i: int) -> NodeName:
    return NodeName(f"node{i + 1:03d}")


def placement_of(k: int, nodes: int) -> tuple[int, int]:
    p = k % nodes
    return p, (p + 1 + (k // nodes) % (nodes - 1)) % nodes


def build_events(nodes: int, instances: int, *, t: float = 1.0) -> list[tuple[int, Event]]:
    """Declarations, placements, the build steps and the nodes' observations."""
    out: list[tuple[int, Event]] = [
        (
            1,
            PolicySet(
                id=new_event_id(), time=t, actor="bench", cluster_name="big", policy=ClusterPolicy()
            ),
        )
    ]
    for i in range(nodes):
        node = NodeSpec(
            name=node_name(i),
            address="127.0.0.1",
            memory_mib=256 * 1024,
            disk_mib=8 * 1024 * 1024,
            cpus=64,
        )
        out.append((1, NodeDeclared(id=new_event_id(), time=t, actor="bench", spec=node)))
    mix = seed_instances()
    copies: dict[int, list[tuple[InstanceSpec, int, bool, int]]] = {i: [] for i in range(nodes)}
    for k in range(instances):
        spec: InstanceSpec = replace(mix[k % len(mix)], name=InstanceName(f"vm{k:05d}"))
        p, s = placement_of(k, nodes)
        out.append((2, InstanceDeclared(id=new_event_id(), time=t, actor="bench", spec=spec)))
        out.append(
            (
                2,
                InstancePlaced(
                    id=new_event_id(),
                    time=t,
                    actor="bench",
                    instance=spec.name,
                    primary=node_name(p),
                    secondary=node_name(s),
                    disks=(
                        DiskPlacement(index=0, size_mib=spec.disk_mib, minor=k, port=11000 + k),
                    ),
                    kind=PlacementKind.INITIAL,
                ),
            )
        )
        copies[p].append((spec, s, True, k))
        copies[s].append((spec, p, False, k))
        for step in ("create-disk", "create-disk", "drbd-initial-primary", "start-vm"):
            out.append(
                (
                    3,
                    StepSucceeded(
                        id=new_event_id(),
                        time=t,
                        actor="bench",
                        key=f"instance/{spec.name}",
                        step=step,
                        node=node_name(p),
                        command=step,
                        duration_s=0.05,
                    ),
                )
            )
    out.sort(key=lambda item: item[0])  # the fold takes revisions in order
    for i in range(nodes):
        out.append((4, observed(i, copies[i], t=t)))
        out.append(
            (
                4,
                NodeHealthChanged(
                    id=new_event_id(),
                    time=t,
                    actor="bench",
                    node=node_name(i),
                    health=NodeHealth.ONLINE,
                ),
            )
        )
    return out


def observed(
    i: int, copies: list[tuple[InstanceSpec, int, bool, int]], *, t: float, free_mib: int = 100_000
) -> NodeObserved:
    vols, drbd, vms = [], [], []
    for spec, peer, primary, k in copies:
        res = f"{spec.name}-d0"
        vols.append(VolumeObs(vg="corral", name=res, size_mib=spec.disk_mib))
        drbd.append(
            DrbdResourceObs(
                name=res,
                role="Primary" if primary else "Secondary",
                disk="UpToDate",
                minor=k,
                peers=(
                    DrbdPeerObs(
                        peer=node_name(peer),
                        connection="Connected",
                        peer_role="Secondary" if primary else "Primary",
                        peer_disk="UpToDate",
                        replication="Established",
                    ),
                ),
            )
        )
        if primary:
            vms.append(
                VmObs(
                    name=spec.name,
                    pid=1000 + k,
                    status="running",
                    memory_mib=spec.memory_mib,
                    vcpus=spec.vcpus,
                )
            )
    return NodeObserved(
        id=new_event_id(),
        time=t,
        actor="bench",
        node=node_name(i),
        facts=NodeFacts(
            hostname=node_name(i),
            cpus=64,
            memory_total_mib=256 * 1024,
            memory_free_mib=free_mib,
            boot_id=f"boot-{i}",
            vg_size_mib=8 * 1024 * 1024,
            vg_free_mib=4 * 1024 * 1024,
        ),
        volumes=tuple(sorted(vols, key=lambda v: v.name)),
        drbd=tuple(sorted(drbd, key=lambda r: r.name)),
        vms=tuple(sorted(vms, key=lambda v: v.name)),
    )


def converged_state(nodes: int, instances: int) -> ClusterState:
    return fold_all(build_events(nodes, instances))


def next_moment(state: ClusterState, n: int, *, t: float) -> list[Event]:
    """A live cluster's next moment: node n's free memory moved (a NodeObserved
    with its facts) and two steps on one of its instances."""
    nodes = sorted(state.desired.nodes)
    node = nodes[n % len(nodes)]
    old = state.observed[node].facts
    assert old is not None
    name = sorted(state.desired.instances)[n % len(state.desired.instances)]
    facts = replace(old, memory_free_mib=old.memory_free_mib + (n % 7) - 3)
    key = f"instance/{name}"
    return [
        NodeObserved(id=new_event_id(), time=t, actor="bench", node=node, facts=facts),
        StepStarted(id=new_event_id(), time=t, actor="bench", key=key, step="drbd-up", node=node),
        StepSucceeded(id=new_event_id(), time=t, actor="bench", key=key, step="drbd-up", node=node),
    ]
