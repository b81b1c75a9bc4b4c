"""KVM on the node: the qemu argv the helper builds itself from a validated start
request (never from option strings the caller sends: `-drive file=/etc/shadow` or
`-chardev` would be root access), and finding a VM's process by name for a stop
(its pidfile read by the helper and checked against /proc before any signal).

The request is plain JSON: {"name", "memory_mib", "vcpus", "disks": [{"index",
"minor"}], "incoming": {"address", "port"}}; new kinds of devices (NICs, VNC, a
seed drive, hypervisor parameters) come as new optional fields, each validated
here. Standard library only; builds argv and reads through the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodehelper.env import NodeEnv
from nodehelper.fields import (
    DISKS_MAX,
    MEMORY_MIB_MAX,
    MINOR_MAX,
    VCPUS_MAX,
    Refused,
    check_address,
    check_name,
    check_number,
    check_object,
)

RUN_DIR = "/run/corral"
QEMU = "qemu-system-x86_64"
_VM_KEYS = frozenset({"name", "memory_mib", "vcpus", "disks"})
_VM_OPTIONAL = frozenset({"incoming"})


@dataclass(frozen=True, slots=True)
class VmStart:
    name: str
    argv: list[str]

    @property
    def sockets(self) -> tuple[str, ...]:
        return vm_sockets(self.name)


def vm_sockets(vm_name: str) -> tuple[str, ...]:
    return (f"{RUN_DIR}/{vm_name}.qmp", f"{RUN_DIR}/{vm_name}.serial")


def start_request(doc: object) -> VmStart:
    """A `vm-start` request, checked field by field, and the argv it means."""
    req = check_object(doc, what="vm-start", required=_VM_KEYS, optional=_VM_OPTIONAL)
    vm_name = check_name(req["name"], what="name")
    memory = check_number(req["memory_mib"], what="memory_mib", low=16, high=MEMORY_MIB_MAX)
    vcpus = check_number(req["vcpus"], what="vcpus", low=1, high=VCPUS_MAX)
    argv = [
        QEMU,
        "-name",
        vm_name,
        "-machine",
        "pc,accel=kvm:tcg",
        "-m",
        str(memory),
        "-smp",
        str(vcpus),
        "-nodefaults",
        "-display",
        "none",
        "-daemonize",
        "-pidfile",
        f"{RUN_DIR}/{vm_name}.pid",
        "-qmp",
        f"unix:{RUN_DIR}/{vm_name}.qmp,server=on,wait=off",
        "-serial",
        f"unix:{RUN_DIR}/{vm_name}.serial,server=on,wait=off",
    ]
    argv += _disk_args(req["disks"])
    if "incoming" in req:
        argv += _incoming_args(req["incoming"])
    return VmStart(name=vm_name, argv=argv)


def _disk_args(disks: Any) -> list[str]:
    if not isinstance(disks, list) or not 1 <= len(disks) <= DISKS_MAX:
        raise Refused(f"vm-start: disks must be a list of 1..{DISKS_MAX}")
    argv: list[str] = []
    minors: set[int] = set()
    for i, doc in enumerate(disks):
        where = f"disks[{i}]"
        disk_doc = check_object(doc, what=where, required=frozenset({"index", "minor"}))
        check_number(disk_doc["index"], what=f"{where}.index", low=0, high=9999)
        minor = check_number(disk_doc["minor"], what=f"{where}.minor", low=0, high=MINOR_MAX)
        if minor in minors:
            raise Refused(f"vm-start: {where}.minor {minor} is used twice")
        minors.add(minor)
        argv += ["-drive", f"file=/dev/drbd{minor},format=raw,if=virtio,cache=none"]
    return argv


def _incoming_args(doc: Any) -> list[str]:
    incoming = check_object(doc, what="incoming", required=frozenset({"address", "port"}))
    host = check_address(incoming["address"], what="incoming.address")
    port = check_number(incoming["port"], what="incoming.port", low=1024, high=65535)
    return ["-incoming", f"tcp:{f'[{host}]' if ':' in host else host}:{port}"]


def vm_pid(env: NodeEnv, vm_name: str) -> int | None:
    """The pid of VM `vm_name`'s qemu, from its pidfile, if that process is still
    this VM's qemu (a stale pidfile or a reused pid gives None)."""
    data = env.read_file(f"{RUN_DIR}/{vm_name}.pid")
    text = (data or b"").decode("ascii", errors="replace").strip()
    if not text.isdigit() or not 0 < int(text) < 1 << 22:
        return None
    cmdline = env.read_file(f"/proc/{int(text)}/cmdline")
    if cmdline is None:
        return None
    argv = cmdline.decode(errors="replace").split("\0")
    names = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-name"]
    if not argv[0].endswith(QEMU) or not names:
        return None
    if names[0].split(",")[0].removeprefix("guest=") != vm_name:
        return None
    return int(text)
