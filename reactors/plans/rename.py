"""Renaming a stopped instance on its nodes (`instance.rename`): what must hold
before anything is touched, the node steps in their order (every disk down on both
nodes, then each LV renamed and its resource written and brought up under the new
name, keeping minors, ports and DRBD node ids, so the pair reconnects without a
resync), whether the nodes already show the new names, and, when the instance's
OS is a Ganeti OS definition, the steps running its `rename` script on the
primary (the disks made Primary there for it, then Secondary again).

Pure: no I/O, no logging. The job runner (`reactors.jobs`) carries the steps out.
"""

from __future__ import annotations

from dataclasses import replace

from events.ids import InstanceName, NodeName
from events.state import ClusterState, Placement
from reactors.naming import disks_by_instance
from reactors.plans.queries import node_actionable, node_fenced, vm_alive, vm_on
from reactors.plans.steps import Step, StepKind, disk_configs, effective_hv


def _nodes(placement: Placement) -> tuple[NodeName, NodeName]:
    return (placement.primary, placement.secondary)


def _seen_anywhere(state: ClusterState, name: InstanceName) -> list[str]:
    found = []
    for node, obs in sorted(state.observed.items()):
        if disks_by_instance(obs).get(name) or vm_on(obs, name) is not None:
            found.append(str(node))
    return found


def rename_blockers(*, state: ClusterState, instance: InstanceName, new: InstanceName) -> list[str]:
    """Why `instance` cannot be renamed to `new` now (empty: it can). Checked when
    the rename is asked for and again before the first node command."""
    spec = state.desired.instances.get(instance)
    if spec is None:
        return [f"no instance named {instance}"]
    if new == instance:
        return [f"{instance} already has that name"]
    if new in state.desired.instances:
        return [f"an instance named {new} exists"]
    blockers = []
    leftovers = _seen_anywhere(state, new)
    if leftovers:
        blockers.append(f"nodes {', '.join(leftovers)} still hold disks or a VM named {new}")
    if spec.power != "stopped":
        blockers.append(f"{instance} is not stopped: `corral instance stop {instance}` first")
    running = [
        str(node) for node, obs in sorted(state.observed.items()) if vm_alive(vm_on(obs, instance))
    ]
    if running:
        blockers.append(f"{instance} still runs on {', '.join(running)}")
    placement = state.placements.get(instance)
    if placement is not None:
        for node in _nodes(placement):
            if not node_actionable(state, node):
                blockers.append(f"node {node} is not reachable (its disks need the new name)")
    return blockers


def rename_steps(
    *, state: ClusterState, instance: InstanceName, new: InstanceName
) -> tuple[tuple[Step, ...], tuple[Step, ...]]:
    """(downs, renames): every old resource down and its file removed on both nodes,
    then on each node each LV renamed, its new resource file written and brought up.
    Each step can run again after a crash (a resource already down, a file already
    gone, an LV already renamed are all fine)."""
    placement = state.placements.get(instance)
    if placement is None:
        return (), ()
    old_disks = disk_configs(state=state, instance=instance, placement=placement)
    new_disks = disk_configs(state=state, instance=new, placement=placement)
    downs = tuple(
        Step(kind=StepKind.DRBD_DOWN, node=node, instance=instance, disk=d, note=f"rename to {new}")
        for node in _nodes(placement)
        for d in old_disks
    )
    renames = tuple(
        Step(
            kind=StepKind.RENAME_DISK,
            node=node,
            instance=instance,
            disk=d,
            renamed_from=old.resource,
            note=f"from {instance}",
        )
        for node in _nodes(placement)
        for old, d in zip(old_disks, new_disks, strict=True)
    )
    return downs, renames


def rename_missing(*, state: ClusterState, instance: InstanceName, new: InstanceName) -> list[str]:
    """What the nodes' last observations still lack for the rename to be done: each
    new LV and DRBD resource present, no old one left (a fenced node is skipped:
    its copy is rebuilt under the new name when it returns)."""
    placement = state.placements.get(instance)
    if placement is None:
        return []
    wanted = {d.resource for d in disk_configs(state=state, instance=new, placement=placement)}
    missing = []
    for node in _nodes(placement):
        obs = state.observed.get(node)
        if node_fenced(state, node) or obs is None:
            continue
        lvs = {v.name for v in obs.volumes}
        resources = {r.name for r in obs.drbd}
        for res in sorted(wanted - lvs):
            missing.append(f"LV {res} on {node}")
        for res in sorted(wanted - resources):
            missing.append(f"DRBD resource {res} on {node}")
        for res in disks_by_instance(obs).get(instance, ()):
            missing.append(f"{res} still on {node}")
    return missing


def os_rename_steps(
    *, state: ClusterState, instance: InstanceName, new: InstanceName
) -> tuple[tuple[Step, ...], Step, tuple[Step, ...]] | None:
    """(promote, run, demote) for the OS definition's rename script on the primary,
    with OLD_INSTANCE_NAME `instance` and the disks under their new names (as
    Ganeti runs it once the disks are renamed); None when the instance's OS is
    not a Ganeti OS definition."""
    spec = state.desired.instances.get(instance)
    placement = state.placements.get(instance)
    if spec is None or placement is None or spec.image is None or not spec.image.ganeti_os:
        return None
    p = placement.primary
    disks = disk_configs(state=state, instance=new, placement=placement)
    promote = tuple(
        Step(kind=StepKind.DRBD_PRIMARY, node=p, instance=instance, disk=d, note="OS rename script")
        for d in disks
    )
    demote = tuple(
        Step(kind=StepKind.DRBD_SECONDARY, node=p, instance=instance, disk=d, note="OS renamed")
        for d in disks
    )
    run = Step(
        kind=StepKind.RENAME_OS,
        node=p,
        instance=instance,
        spec=replace(effective_hv(state=state, spec=spec, node=p), name=new),
        disks=disks,
        renamed_from=instance,
        note=f"{spec.image.name} rename from {instance}",
    )
    return promote, run, demote
