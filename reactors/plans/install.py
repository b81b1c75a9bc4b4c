"""OS installs in an instance's plan: whether its first disk is to get the image
now (a new instance with an image, or a reinstall asked for), whether the VM must
be stopped first or may not start yet, the cloud-init instance-id its seed
carries, and the events that record how an install went.

Pure: no I/O, no logging, no clocks. Writing an image destroys the disk's data, so
it is planned only while an install is pending in the log (the instance's
declaration, or InstanceReinstallRequested), never from anything observed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from events.ids import EventId, InstanceName, NodeName
from events.model import Event, InstanceInstalled, InstanceInstallFailed
from events.specs import InstanceSpec
from events.state import ClusterState

# The node helper's image-write/image-fetch exits for an image that is missing or
# has another checksum (nodehelper.images), and os-create's for a definition that
# is missing or unusable or whose script failed (nodehelper.osdef): trying again
# does not help.
_FINAL_RE = re.compile(r"exited (65|66|71):")


def _what(spec: InstanceSpec | None, name: str) -> str:
    """How messages name the OS being installed."""
    if spec is not None and spec.image is not None and spec.image.ganeti_os:
        return f"OS definition {name} not installed"
    return f"OS image {name} not written"


class InstallAction(StrEnum):
    NONE = "none"  # nothing to install: start as usual
    STOP = "stop"  # the VM runs: stop it first (a reinstall)
    WRITE = "write"  # write the image now; do not start before it is written
    WAIT = "wait"  # do not start: the install cannot proceed (see `why`)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallVerdict:
    action: InstallAction
    why: str = ""
    reinstall: bool = False  # the pending install is a reinstall


def install_verdict(
    *, state: ClusterState, spec: InstanceSpec, vm_running: bool, disks_ready: bool
) -> InstallVerdict:
    """What the pending install of `spec` (if any) asks of the plan now."""
    pending = state.installs.get(spec.name)
    if pending is None or pending.done:
        return InstallVerdict(action=InstallAction.NONE)
    if pending.error:
        return InstallVerdict(
            action=InstallAction.WAIT,
            why=(
                f"{_what(spec, pending.image)}: {pending.error}; fix the image, the "
                f"definition or the catalogue, then `corral instance reinstall {spec.name}`"
            ),
        )
    if spec.image is None or spec.image.name != pending.image:
        return InstallVerdict(
            action=InstallAction.WAIT,
            why=f"OS image {pending.image} is not the instance's image any more",
        )
    if vm_running:
        return InstallVerdict(action=InstallAction.STOP, why=f"reinstall of {pending.image}")
    if not disks_ready:
        return InstallVerdict(action=InstallAction.WAIT, why="")
    what = "OS definition" if spec.image.ganeti_os else "OS image"
    return InstallVerdict(
        action=InstallAction.WRITE, why=f"{what} {pending.image}", reinstall=pending.reinstall
    )


def install_wanted(state: ClusterState, spec: InstanceSpec) -> bool:
    """An install of `spec`'s image is pending and can proceed (not failed, still
    its image): its first disk must be Primary on its primary node for it, whether
    or not the VM is to run."""
    pending = state.installs.get(spec.name)
    return (
        pending is not None
        and not pending.done
        and not pending.error
        and spec.image is not None
        and spec.image.name == pending.image
    )


def seed_id(state: ClusterState, spec: InstanceSpec) -> str:
    """The cloud-init instance-id of `spec`'s seed ("" when it has no seed): the
    event that asked for its install, so it changes with a reinstall only."""
    if spec.cloud_init is None:
        return ""
    pending = state.installs.get(spec.name)
    return f"{spec.name}-{pending.request_id}" if pending else spec.name


def install_failure(state: ClusterState, name: InstanceName) -> str:
    """Why the instance's install failed for good ("" if it did not)."""
    pending = state.installs.get(name)
    if pending is None or not pending.error:
        return ""
    return f"{_what(state.desired.instances.get(name), pending.image)}: {pending.error}"


def install_events(
    *,
    spec: InstanceSpec,
    node: NodeName,
    ok: bool,
    error: str,
    stamp: Callable[[], tuple[EventId, float]],
    actor: str,
) -> list[Event]:
    """What an install step's outcome records: the image written, or a failure
    trying again cannot fix (a transient one records nothing: the plan retries)."""
    image = spec.image
    if image is None:
        return []
    if ok:
        event_id, now = stamp()
        return [
            InstanceInstalled(
                id=event_id,
                time=now,
                actor=actor,
                instance=spec.name,
                node=node,
                image=image.name,
                sha256=image.sha256,
            )
        ]
    if _FINAL_RE.search(error):
        event_id, now = stamp()
        return [
            InstanceInstallFailed(
                id=event_id,
                time=now,
                actor=actor,
                instance=spec.name,
                node=node,
                image=image.name,
                error=f"on {node}: {error}"[:500],
            )
        ]
    return []
