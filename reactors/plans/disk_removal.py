"""Removing an instance's last disk (`instance.remove-disk`): why it cannot be done
now (checked when it is asked for, and again by the job before it records
anything; the desired-state diff holds a file to the same rules), the node steps
that take the disk's DRBD resource down and remove its LV on both nodes, and what
the nodes still report of it.

Only the last disk of a stopped instance, never its only one: a disk in the middle
would renumber the ones after it (their LVs, resources and the guest's device
order), and a running guest would lose a disk under its feet.

Pure: no I/O, no logging. The job runner (`reactors.jobs.disk_removal`) carries
the steps out.
"""

from __future__ import annotations

from events.ids import InstanceName, NodeName
from events.specs import PowerState
from events.state import ClusterState
from reactors.naming import disk_name
from reactors.plans.queries import nodes_running
from reactors.plans.steps import Step, StepKind, bare_disk


def removal_blockers(*, state: ClusterState, instance: InstanceName, index: int) -> list[str]:
    """Why disk `index` of `instance` cannot be removed now (empty: it can)."""
    spec = state.desired.instances.get(instance)
    if spec is None:
        return [f"no instance named {instance}"]
    count = len(spec.disks)
    blockers = []
    if count <= 1:
        blockers.append(
            f"disk {index} is {instance}'s only disk; an instance keeps at least one "
            "(remove the instance instead)"
        )
    elif index != count - 1:
        blockers.append(
            f"only the last disk ({count - 1}) of {instance} can be removed, not disk {index} "
            "(the disks after it would be renumbered)"
        )
    if spec.power is not PowerState.STOPPED:
        blockers.append(f"{instance} must be stopped first: `corral instance stop {instance}`")
    running = nodes_running(state, instance)
    if running:
        blockers.append(f"{instance} still runs on {', '.join(running)}")
    return blockers


def removal_steps(
    *, state: ClusterState, instance: InstanceName, index: int, nodes: tuple[NodeName, ...]
) -> tuple[Step, ...]:
    """On each of `nodes`, disk `index`'s DRBD resource down, its file and its LV
    removed (each safe to run again: a resource already down, a file or an LV
    already gone are fine)."""
    resource = disk_name(instance, index)
    return tuple(
        Step(
            kind=StepKind.REMOVE_DISK,
            node=node,
            instance=instance,
            disk=bare_disk(resource, state, node),
            note=f"disk {index} removed",
        )
        for node in nodes
    )


def removal_left(
    *, state: ClusterState, instance: InstanceName, index: int, nodes: tuple[NodeName, ...]
) -> list[str]:
    """What the last observations of `nodes` still show of disk `index` (a node
    never observed shows nothing)."""
    resource = disk_name(instance, index)
    left = []
    for node in nodes:
        obs = state.observed.get(node)
        if obs is None:
            continue
        if any(v.name == resource for v in obs.volumes):
            left.append(f"LV {resource} on {node}")
        if any(r.name == resource for r in obs.drbd):
            left.append(f"DRBD resource {resource} on {node}")
    return left
