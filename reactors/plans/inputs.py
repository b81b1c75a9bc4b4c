"""What one instance's plan reads from the folded state, as one value: its own
records (spec, placement, refusal, install, VM starts, the version of its key),
the cluster-wide maps a plan consults (policy, groups, node specs, alerts), and for
every node that places or reports it (its primary, its secondary, any node whose
last observation names it) that node's health, whether its facts are known, and
the instance's own VM, DRBD resources and LVs there. Two equal values plan alike
(`reactors.plans.instance.plan_instance` reads nothing else, and a converged plan
does not depend on the time), so the instance workers skip a pass whose inputs
are those of the instance's last converged pass.

Pure: no I/O, no logging, no clocks. Must not be read as "nothing changed on the
node": only this instance's part of each node is in it.
"""

from __future__ import annotations

from events.ids import InstanceName, NodeName
from events.model import instance_key
from events.state import ClusterState
from reactors.naming import disks_by_instance
from reactors.plans.seen import node_items, seen_on

# Compared with ==: the fold shares unchanged maps and records from one state to
# the next, so most elements are the very same objects (tuple equality tries
# identity first) and only what was replaced is compared field by field.
PlanInputs = tuple[object, ...]


def plan_inputs(state: ClusterState, instance: InstanceName) -> PlanInputs:
    """Everything `plan_instance(state=state, instance=instance, ...)` reads, and
    the alerts its pass clears."""
    placement = state.placements.get(instance)
    nodes: set[NodeName] = set(seen_on(state, instance))
    if placement is not None:
        nodes.update((placement.primary, placement.secondary))
    desired = state.desired
    return (
        state.versions.get(instance_key(instance)),
        desired.instances.get(instance),
        placement,
        state.refusals.get(instance),
        state.installs.get(instance),
        state.vm_starts.get(instance),
        desired.policy,
        desired.groups,
        desired.nodes,
        state.alerts,
        tuple(_node_part(state, node, instance) for node in sorted(nodes)),
    )


def _node_part(state: ClusterState, node: NodeName, instance: InstanceName) -> tuple[object, ...]:
    obs = state.observed.get(node)
    if obs is None:
        return (node, None)
    items = node_items(obs)
    names = disks_by_instance(obs).get(instance, ())
    return (
        node,
        obs.health,
        obs.facts is None,
        items.vms.get(instance),
        names,
        tuple(items.drbd.get(name) for name in names),
        tuple(items.lvs.get(name) for name in names),
    )
