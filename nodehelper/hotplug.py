"""Hotplug into a running VM over its QMP socket: add or remove one NIC (qemu makes
the tap, the helper bridges it) or one DRBD disk, with the same ids and PCI slots
a cold start gives that device (nodehelper.devices), so the VM migrates and
restarts with the same layout.

Request: {"name", "action": "add"|"remove", and exactly one of "nic" (as in
vm-start) or "disk" ({"index", "minor"}; "hv" for its cache and aio)}. A step
qemu refuses is undone before the verb fails (a netdev without its device, a
block node without its disk), so a refused hotplug leaves the VM as it was.

Standard library only; reaches the node and qemu only through the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodehelper.devices import (
    DISK_SLOT,
    NIC_SLOT,
    Disk,
    Hv,
    Nic,
    bridge_argv,
    check_disk_entry,
    check_hv,
    check_nic,
)
from nodehelper.env import NodeEnv, Outcome, QmpCommand
from nodehelper.fields import Refused, check_name, check_object
from nodehelper.vm import RUN_DIR, node_bridges, vm_pid

_KEYS = frozenset({"name", "action"})
_OPTIONAL = frozenset({"nic", "disk", "hv"})


@dataclass(frozen=True, slots=True)
class Hotplug:
    name: str
    add: bool
    nic: Nic | None = None
    disk: Disk | None = None
    hv: Hv = Hv()

    @property
    def qmp_path(self) -> str:
        return f"{RUN_DIR}/{self.name}.qmp"


def hotplug_request(doc: object) -> Hotplug:
    req = check_object(doc, what="vm-hotplug", required=_KEYS, optional=_OPTIONAL)
    vm_name = check_name(req["name"], what="name")
    action = req["action"]
    if action not in ("add", "remove"):
        raise Refused(f"action {action!r} is not one of: add, remove")
    if ("nic" in req) == ("disk" in req):
        raise Refused("vm-hotplug: give exactly one of nic, disk")
    if "nic" in req:
        nic = check_nic(req["nic"], vm_name=vm_name, where="nic")
        return Hotplug(name=vm_name, add=action == "add", nic=nic)
    disk = check_disk_entry(req["disk"], where="disk")
    return Hotplug(name=vm_name, add=action == "add", disk=disk, hv=check_hv(req.get("hv", {})))


def _failed(what: str, answers: list[dict[str, Any]]) -> Outcome:
    error = answers[-1].get("error") if answers else None
    desc = error.get("desc", error) if isinstance(error, dict) else "no answer"
    return Outcome(
        1, b"", f"corral-node-helper: vm-hotplug: qemu refused {what}: {desc}\n".encode()
    )


def _run_qmp(env: NodeEnv, plug: Hotplug, commands: list[QmpCommand]) -> list[dict[str, Any]]:
    return env.qmp(plug.qmp_path, commands)


def _ok(answers: list[dict[str, Any]], count: int) -> bool:
    return len(answers) == count and all("return" in a for a in answers)


def _already(answers: list[dict[str, Any]]) -> bool:
    """qemu's answer when the id or node name is taken: a retried hotplug whose first
    try went in (its answer lost) finds its own backend or device there."""
    error = answers[-1].get("error") if answers else None
    return isinstance(error, dict) and str(error.get("desc", "")).startswith("Duplicate ")


def _there(plug: Hotplug, what: str) -> Outcome:
    return Outcome(0, f"{what} was already in {plug.name}\n".encode())


def _add_nic(env: NodeEnv, plug: Hotplug, nic: Nic) -> Outcome:
    bridges = node_bridges(env)
    if isinstance(bridges, Outcome):
        return bridges
    if nic.link not in bridges:
        raise Refused(f"nic.link: this node has no bridge {nic.link!r}")
    netdev = {
        "type": "tap",
        "id": f"net-n{nic.index}",
        "ifname": nic.tap,
        "script": "no",
        "downscript": "no",
    }
    answers = _run_qmp(env, plug, [("netdev_add", netdev)])
    ours = _ok(answers, 1)
    if not ours and not _already(answers):
        return _failed("netdev_add", answers)
    # Only a backend this call made is taken out again on a refusal.
    undo: list[QmpCommand] = [("netdev_del", {"id": f"net-n{nic.index}"})] if ours else []
    for argv in bridge_argv(nic):
        done = env.run(argv)
        if done.rc != 0:
            _run_qmp(env, plug, undo)
            return done
    device = {
        "driver": nic.model,
        "netdev": f"net-n{nic.index}",
        "id": f"nic-n{nic.index}",
        "mac": nic.mac,
        "addr": f"{NIC_SLOT + nic.index:#x}",
    }
    answers = _run_qmp(env, plug, [("device_add", device)])
    if _already(answers) and not ours:
        return _there(plug, f"nic {nic.index}")
    if not _ok(answers, 1):
        _run_qmp(env, plug, undo)
        return _failed("device_add", answers)
    return Outcome(0, f"added nic {nic.index} ({nic.mac} on {nic.link}) to {plug.name}\n".encode())


def _add_disk(env: NodeEnv, plug: Hotplug, disk: Disk) -> Outcome:
    hv = plug.hv
    node = f"drive-d{disk.index}"
    blockdev = {
        "driver": "raw",
        "node-name": node,
        "file": {
            "driver": "host_device",
            "filename": f"/dev/drbd{disk.minor}",
            "aio": hv.disk_aio,
            "cache": {
                "direct": hv.disk_cache in ("none", "directsync"),
                "no-flush": hv.disk_cache == "unsafe",
            },
        },
    }
    answers = _run_qmp(env, plug, [("blockdev-add", blockdev)])
    ours = _ok(answers, 1)
    if not ours and not _already(answers):
        return _failed("blockdev-add", answers)
    device = {
        "driver": "virtio-blk-pci",
        "drive": node,
        "id": f"disk-d{disk.index}",
        "addr": f"{DISK_SLOT + disk.index:#x}",
    }
    answers = _run_qmp(env, plug, [("device_add", device)])
    if _already(answers) and not ours:
        return _there(plug, f"disk {disk.index}")
    if not _ok(answers, 1):
        if ours:
            _run_qmp(env, plug, [("blockdev-del", {"node-name": node})])
        return _failed("device_add", answers)
    return Outcome(0, f"added disk {disk.index} (/dev/drbd{disk.minor}) to {plug.name}\n".encode())


def _remove(env: NodeEnv, plug: Hotplug) -> Outcome:
    if plug.nic is not None:
        device, backend = f"nic-n{plug.nic.index}", ("netdev_del", {"id": f"net-n{plug.nic.index}"})
    else:
        assert plug.disk is not None
        index = plug.disk.index
        device, backend = f"disk-d{index}", ("blockdev-del", {"node-name": f"drive-d{index}"})
    answers = _run_qmp(env, plug, [("device_del", {"id": device})])
    if not _ok(answers, 1):
        return _failed("device_del", answers)
    answers = _run_qmp(env, plug, [backend])
    # A disk given at start is a -drive, which qemu drops with its device; only a
    # hotplugged one is a named block node left to delete.
    if not _ok(answers, 1) and plug.nic is not None:
        return _failed(backend[0], answers)
    return Outcome(0, f"removed {device} from {plug.name}\n".encode())


def hotplug(env: NodeEnv, plug: Hotplug) -> Outcome:
    if vm_pid(env, plug.name) is None:
        raise Refused(f"{plug.name} is not running here; the change applies at its next start")
    if not plug.add:
        return _remove(env, plug)
    if plug.nic is not None:
        return _add_nic(env, plug, plug.nic)
    assert plug.disk is not None
    return _add_disk(env, plug, plug.disk)
