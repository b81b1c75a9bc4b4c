"""What the node helper makes of the orchestrator's requests, for tests that check
it against real tools or the simulator: the resource file it writes for a
`drbd-config` request and the qemu argv it runs for a `vm-start` request."""

from __future__ import annotations

import json

from events.specs import InstanceSpec
from nodehelper.drbd import resource_request, resource_text
from nodehelper.vm import start_request
from reactors.nodes.commands import drbd_config, vm_start
from reactors.plans.steps import DiskConfig


def resource_file(
    disk: DiskConfig, *, allow_two_primaries: bool = False, drbd_major: int = 9
) -> str:
    """The file the helper writes for the orchestrator's drbd-config request."""
    body = drbd_config(disk, two=allow_two_primaries, drbd_major=drbd_major).body
    return resource_text(resource_request(json.loads(json.dumps(body))))


def qemu_argv(
    *, spec: InstanceSpec, disks: tuple[DiskConfig, ...], incoming: tuple[str, int] | None = None
) -> list[str]:
    """The argv the helper runs for the orchestrator's vm-start request."""
    body = vm_start(spec=spec, disks=disks, incoming=incoming).body
    return start_request(json.loads(json.dumps(body))).argv
