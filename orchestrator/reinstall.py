"""`corral instance reinstall NAME [--os IMAGE]`: the operation, shared by the CLI
and RAPI (which layers a request's osparams over the new spec's definition first).
It records an `instance.reinstall` job carrying the instance's spec with the image
(another one of the last applied file's catalogue with --os; an image or a Ganeti
OS definition) and InstanceReinstallRequested; the instance plan then stops the
VM, writes the image onto its first disk (or runs the definition's create script
with INSTANCE_REINSTALL=1 and the spec's parameters as OSP_*), writes a new
cloud-init seed (a new instance-id) and starts it, or, for an instance desired
stopped, leaves it stopped (reactors.plans.install).

Must not run node commands. Refuses, changing nothing, an instance without an
image and an image the catalogue does not hold.
"""

from __future__ import annotations

import time
from dataclasses import replace

from events.ids import InstanceName, new_event_id
from events.model import Event, InstanceReinstallRequested, InstanceUpdated, JobKind
from events.specs import CloudInitSpec, ImageSpec, InstanceSpec, PowerState
from events.state import ClusterState
from orchestrator.operations import Accepted, EventAppender, OperationRefused, submit_job


def catalogue(state: ClusterState) -> dict[str, ImageSpec]:
    """The image catalogue of the last applied desired-state file."""
    applied = state.last_applied
    return {i.name: i for i in applied.images} if applied is not None else {}


def with_catalogue_image(spec: InstanceSpec, state: ClusterState) -> InstanceSpec:
    """A spec made elsewhere than the file (a RAPI create's `os_type`): its `os`
    given the last applied catalogue's image or OS definition of that name (or
    another variant of a definition declared there), when there is one."""
    image = catalogue(state).get(spec.os) or _variant_of(state, spec.os)
    if spec.image is not None or image is None:
        return spec
    return replace(spec, image=image, cloud_init=None if image.ganeti_os else CloudInitSpec())


def _variant_of(state: ClusterState, os_name: str) -> ImageSpec | None:
    """Another variant of a Ganeti OS definition the catalogue declares (as
    `gnt-instance add -o NAME+VARIANT` takes any variant the node's definition
    lists, checked there), with that definition's parameters."""
    provider = os_name.partition("+")[0]
    for entry in catalogue(state).values():
        if entry.ganeti_os and entry.name.partition("+")[0] == provider:
            return replace(entry, name=os_name)
    return None


async def reinstall_instance(
    store: EventAppender,
    state: ClusterState,
    *,
    instance: str,
    os_name: str | None = None,
    actor: str,
    reason: str = "",
    power: PowerState | None = None,
) -> Accepted:
    """`power`: the run state wanted after the write (Ganeti's `start`), recorded
    with the spec; None keeps the instance's own."""
    spec, new = reinstalled(state, instance=instance, os_name=os_name, power=power)
    return await record_reinstall(store, state, spec=spec, new=new, actor=actor, reason=reason)


def reinstalled(
    state: ClusterState,
    *,
    instance: str,
    os_name: str | None = None,
    power: PowerState | None = None,
) -> tuple[InstanceSpec, InstanceSpec]:
    """(the instance's spec, the spec its reinstall records): the catalogue's
    current entry for its image, or the one `os_name` names; a face may change
    the new spec's image further (RAPI's osparams) before it is recorded."""
    spec = state.desired.instances.get(InstanceName(instance))
    if spec is None:
        raise OperationRefused(f"no instance named {instance!r}", field="instance")
    images = catalogue(state)
    if os_name is not None:
        image = images.get(os_name) or _variant_of(state, os_name)
        if image is None:
            known = ", ".join(sorted(images)) or "none (apply a file with `images:`)"
            raise OperationRefused(
                f"os {os_name!r} is not an image or OS definition of the catalogue; "
                f"images: {known}",
                field="os",
            )
    elif spec.image is not None:
        image = images.get(spec.image.name, spec.image)
    else:
        raise OperationRefused(
            f"{instance} has no OS image (os: {spec.os}); name one with --os IMAGE", field="os"
        )
    new = replace(
        spec,
        os=image.name,
        image=image,
        cloud_init=spec.cloud_init or (None if image.ganeti_os else CloudInitSpec()),
        power=spec.power if power is None else power,
    )
    return spec, new


async def record_reinstall(
    store: EventAppender,
    state: ClusterState,
    *,
    spec: InstanceSpec,
    new: InstanceSpec,
    actor: str,
    reason: str = "",
) -> Accepted:
    """The `instance.reinstall` job writing `new.image` (with the new spec first
    when it differs from `spec`, the instance's)."""
    image = new.image
    if image is None:
        raise OperationRefused(f"{spec.name} has no OS image to reinstall", field="os")
    instance = str(spec.name)
    why = f"reinstall {instance} with {image.name} " + (
        "(its OS definition's create script)"
        if image.ganeti_os
        else f"(sha256 {image.sha256[:12]}...)"
    )
    if new.power != spec.power:
        why += ", then " + ("started" if new.power == PowerState.RUNNING else "left stopped")
    if reason:
        why += f"; {reason}"
    now = time.time()
    follow: list[Event] = []
    if new != spec:
        follow.append(
            InstanceUpdated(id=new_event_id(), time=now, actor=actor, reason=why, spec=new)
        )
    follow.append(
        InstanceReinstallRequested(
            id=new_event_id(),
            time=now,
            actor=actor,
            reason=why,
            instance=spec.name,
            image=image.name,
        )
    )
    return await submit_job(
        store,
        state,
        kind=JobKind.INSTANCE_REINSTALL,
        target=instance,
        params={"os": image.name},
        actor=actor,
        reason=reason or why,
        follow=tuple(follow),
    )
