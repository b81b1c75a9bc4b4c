"""What the folded state says about a node and an instance's items there, as the
planners read it: whether commands can run on a node (declared, not offline,
ONLINE, probed), whether it is fenced, an instance's VM and DRBD resources and LVs
as the node last reported them, and the nodes that may be running a VM.

Pure: no I/O, no logging, no clocks.
"""

from __future__ import annotations

from events.ids import InstanceName, NodeName
from events.model import DrbdResourceObs, NodeHealth, VmObs
from events.state import ClusterState, NodeObservation
from reactors.plans.seen import node_items, seen_on

UP_TO_DATE = "UpToDate"
CONNECTED = "Connected"
PRIMARY = "Primary"
SECONDARY = "Secondary"
RUNNING_VM_STATES = frozenset(
    {"running", "paused", "inmigrate", "postmigrate", "prelaunch", "finish-migrate"}
)


def _obs(state: ClusterState, node: NodeName) -> NodeObservation | None:
    return state.observed.get(node)


def node_actionable(state: ClusterState, node: NodeName) -> bool:
    """We can run commands there: declared, not offline, reachable and probed."""
    spec = state.desired.nodes.get(node)
    obs = _obs(state, node)
    return (
        spec is not None
        and not spec.offline
        and obs is not None
        and obs.health == NodeHealth.ONLINE
        and obs.facts is not None
    )


def node_fenced(state: ClusterState, node: NodeName) -> bool:
    obs = _obs(state, node)
    return obs is not None and obs.health == NodeHealth.FENCED


def node_fresh(state: ClusterState, node: NodeName, *, now: float) -> bool:
    """Its observation is current. Observations are recorded only when they change,
    so freshness comes from health: a node stays ONLINE only while its probes keep
    succeeding (the health monitor demotes it to SUSPECT within the suspect timeout)."""
    del now
    return node_actionable(state, node)


def vm_on(obs: NodeObservation | None, instance: str) -> VmObs | None:
    return None if obs is None else node_items(obs).vms.get(instance)


def vm_alive(vm: VmObs | None) -> bool:
    return vm is not None and vm.status in RUNNING_VM_STATES


def drbd_on(obs: NodeObservation | None, resource: str) -> DrbdResourceObs | None:
    return None if obs is None else node_items(obs).drbd.get(resource)


def lv_size_on(obs: NodeObservation | None, vg: str, name: str) -> int | None:
    vol = None if obs is None else node_items(obs).volumes.get((vg, name))
    return None if vol is None else vol.size_mib


def nodes_running(state: ClusterState, instance: str) -> list[NodeName]:
    """Nodes whose last observation shows the VM alive (stale ones included: a node
    we cannot see may still be running it, unless it is fenced)."""
    found = []
    for node in seen_on(state, InstanceName(instance)):
        obs = state.observed[node]
        if obs.health == NodeHealth.FENCED:
            continue
        if vm_alive(vm_on(obs, instance)):
            found.append(node)
    return sorted(found)
