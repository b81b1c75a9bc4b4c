"""Hypervisor parameters (Ganeti's kvm hvparams of the same names) as field rules:
each value one of a fixed set or a full-string pattern, the same the node helper
holds its `vm-start` request's `hv` to (it checks again on the node). "" means
unset: inherited (instance over node group over cluster) or qemu's default.

Pure: no I/O, no logging.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from events.fields.rules import FieldError, before, kind, schema, show

KVM_FLAGS = ("enabled", "disabled")
BOOT_ORDERS = ("disk", "cdrom", "network")
DISK_CACHES = ("none", "writethrough", "writeback", "directsync", "unsafe")
DISK_AIOS = ("threads", "native", "io_uring")
USB_MICE = ("mouse", "tablet")
REBOOT_BEHAVIORS = ("reboot", "exit")
# Ganeti's kvm `nic_type`: `paravirtual` is virtio-net, the others qemu's emulated NICs.
NIC_TYPES = (
    "paravirtual",
    "e1000",
    "rtl8139",
    "ne2k_pci",
    "i82551",
    "i82557b",
    "i82559er",
    "pcnet",
)
_CPU_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_MACHINE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KERNEL_PATH_RE = re.compile(r"/(?:boot|var/lib/corral/kernels)/[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
_KERNEL_ARGS_RE = re.compile(r"[\x20-\x7e]{0,1024}")


def _one_of(allowed: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise FieldError(f"expected a string, got {kind(value)}")
        if value and value not in allowed:
            raise FieldError(f"{show(value)} is not one of: {', '.join(allowed)}")
        return value

    return check


def _matching(rule: re.Pattern[str], what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise FieldError(f"expected a string, got {kind(value)}")
        if value and (not rule.fullmatch(value) or ".." in value):
            raise FieldError(f"{show(value)} is not {what}")
        return value

    return check


def _choice(allowed: tuple[str, ...]) -> object:
    return schema(type="string", enum=["", *allowed])


KvmFlag = Annotated[str, before(_one_of(KVM_FLAGS)), _choice(KVM_FLAGS)]
CpuType = Annotated[
    str, before(_matching(_CPU_RE, "a qemu CPU model (host, qemu64, Skylake-Server...)"))
]
MachineType = Annotated[
    str, before(_matching(_MACHINE_RE, "a qemu machine type (pc, q35, pc-i440fx-7.2...)"))
]
BootOrder = Annotated[str, before(_one_of(BOOT_ORDERS)), _choice(BOOT_ORDERS)]
KernelPath = Annotated[
    str,
    before(_matching(_KERNEL_PATH_RE, "a file directly in /boot/ or /var/lib/corral/kernels/")),
]
KernelArgs = Annotated[
    str, before(_matching(_KERNEL_ARGS_RE, "printable ASCII of at most 1024 characters"))
]
DiskCache = Annotated[str, before(_one_of(DISK_CACHES)), _choice(DISK_CACHES)]
DiskAio = Annotated[str, before(_one_of(DISK_AIOS)), _choice(DISK_AIOS)]
UsbMouse = Annotated[str, before(_one_of(USB_MICE)), _choice(USB_MICE)]
RebootBehavior = Annotated[str, before(_one_of(REBOOT_BEHAVIORS)), _choice(REBOOT_BEHAVIORS)]
NicType = Annotated[str, before(_one_of(NIC_TYPES)), _choice(NIC_TYPES)]
