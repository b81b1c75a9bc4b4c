"""The guest's devices in a `vm-start` request, beyond memory and CPUs: the DRBD
disks, the read-only cloud-init seed drive, NICs (a tap per NIC, put on a bridge),
the VNC display on loopback and the hypervisor parameters (Ganeti's kvm hvparams),
each field checked by a full-string rule and turned into qemu arguments here.

Standard library only; builds argv and the tap/bridge commands, runs nothing.
Every device gets a fixed id and PCI slot from its index, so a live migration's
incoming qemu and a hotplug name and place devices exactly as a cold start does.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from nodehelper.fields import (
    MINOR_MAX,
    Refused,
    check_flag,
    check_number,
    check_object,
)

SEED_DIR = "/var/lib/corral/seed"
NICS_MAX = 8
VNC_DISPLAY_MAX = 65535 - 5900
MAC_RE = re.compile(r"[0-9a-f][02468ace](?::[0-9a-f]{2}){5}")
# A Linux interface name as corral accepts it: no '/', no ':', no leading '-'.
LINK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
NIC_MODELS = frozenset(
    {"virtio-net-pci", "e1000", "rtl8139", "ne2k_pci", "i82551", "i82557b", "i82559er", "pcnet"}
)
# Ganeti's kvm `nic_type` (hv): the model of a NIC that names none.
NIC_TYPES = {"paravirtual": "virtio-net-pci", **{m: m for m in NIC_MODELS - {"virtio-net-pci"}}}
CPU_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+,-]{0,127}")
MACHINE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
# Direct kernel boot reads the file as root: only kernels the node keeps for it.
KERNEL_PATH_RE = re.compile(
    r"/(?:boot|var/lib/corral/kernels)/[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,199}"
)
KERNEL_ARGS_RE = re.compile(r"[\x20-\x7e]{0,2048}")
BOOT_ORDER = {"disk": "c", "cdrom": "d", "network": "n"}
DISK_CACHE = frozenset({"none", "writethrough", "writeback", "directsync", "unsafe"})
DISK_AIO = frozenset({"threads", "native", "io_uring"})
USB_MOUSE = {
    "": [],
    "mouse": ["-usb", "-device", "usb-mouse"],
    "tablet": ["-usb", "-device", "usb-tablet"],
}
REBOOT = {"reboot": [], "exit": ["-no-reboot"]}
KVM_FLAG = {"": "kvm:tcg", "enabled": "kvm", "disabled": "tcg"}
HV_KEYS = frozenset(
    {
        "kvm_flag",
        "cpu_type",
        "machine_type",
        "boot_order",
        "kernel_path",
        "kernel_args",
        "initrd_path",
        "disk_cache",
        "disk_aio",
        "usb_mouse",
        "reboot_behavior",
        "nic_type",
    }
)
# PCI slots on the i440fx (`pc`) machine: 2 the VGA for VNC, 4..19 disks 0..15,
# 20 the seed, 21..28 NICs 0..7.
DISK_SLOT, SEED_SLOT, NIC_SLOT = 4, 20, 21


@dataclass(frozen=True, slots=True)
class Nic:
    index: int
    mac: str
    link: str
    model: str
    tap: str


@dataclass(frozen=True, slots=True)
class Disk:
    index: int
    minor: int


@dataclass(frozen=True, slots=True)
class Hv:
    accel: str = "kvm:tcg"
    cpu_type: str = ""
    machine_type: str = "pc"
    boot_order: str = "c"
    kernel_path: str = ""
    kernel_args: str = ""
    initrd_path: str = ""
    disk_cache: str = "none"
    disk_aio: str = "threads"
    usb_mouse: str = ""
    reboot_behavior: str = "reboot"
    nic_model: str = "virtio-net-pci"


def tap_name(vm_name: str, index: int) -> str:
    """The tap of NIC `index`: 'cr', 11 hex digits of the VM name's hash and the
    index (an interface name holds at most 15 characters; a VM name 63)."""
    digest = hashlib.sha256(vm_name.encode()).hexdigest()[:11]
    return f"cr{digest}{index:x}"


def seed_path(vm_name: str) -> str:
    return f"{SEED_DIR}/{vm_name}.img"


def _choice(value: object, *, what: str, allowed: Any) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise Refused(f"{what} {value!r} is not one of: {', '.join(sorted(allowed))}")
    return value


def _match(value: object, *, what: str, rule: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not rule.fullmatch(value) or ".." in value:
        raise Refused(f"{what} {value!r} does not match {rule.pattern}")
    return value


def check_nic(
    doc: object, *, vm_name: str, where: str, default_model: str = "virtio-net-pci"
) -> Nic:
    nic = check_object(
        doc,
        what=where,
        required=frozenset({"index", "mac", "link"}),
        optional=frozenset({"mode", "model"}),
    )
    index = check_number(nic["index"], what=f"{where}.index", low=0, high=NICS_MAX - 1)
    mac = nic["mac"]
    if not isinstance(mac, str) or not MAC_RE.fullmatch(mac) or mac == "00:00:00:00:00:00":
        raise Refused(f"{where}.mac {mac!r} is not a unicast MAC address (lowercase hex)")
    link = _match(nic["link"], what=f"{where}.link", rule=LINK_RE)
    _choice(nic.get("mode", "bridged"), what=f"{where}.mode", allowed={"bridged"})
    model = _choice(nic.get("model", default_model), what=f"{where}.model", allowed=NIC_MODELS)
    return Nic(index=index, mac=mac, link=link, model=model, tap=tap_name(vm_name, index))


def check_nics(docs: object, *, vm_name: str, hv: Hv | None = None) -> list[Nic]:
    """`nics`, each NIC without a `model` of `hv`'s nic_type."""
    if not isinstance(docs, list) or len(docs) > NICS_MAX:
        raise Refused(f"vm-start: nics must be a list of at most {NICS_MAX}")
    default = (hv or Hv()).nic_model
    nics = [
        check_nic(d, vm_name=vm_name, where=f"nics[{i}]", default_model=default)
        for i, d in enumerate(docs)
    ]
    for field in ("index", "mac"):
        seen: set[object] = set()
        for i, nic in enumerate(nics):
            value = getattr(nic, field)
            if value in seen:
                raise Refused(f"vm-start: nics[{i}].{field} {value!r} is used twice")
            seen.add(value)
    return nics


def check_disk_entry(doc: object, *, where: str) -> Disk:
    disk = check_object(doc, what=where, required=frozenset({"index", "minor"}))
    index = check_number(
        disk["index"], what=f"{where}.index", low=0, high=SEED_SLOT - DISK_SLOT - 1
    )
    minor = check_number(disk["minor"], what=f"{where}.minor", low=0, high=MINOR_MAX)
    return Disk(index=index, minor=minor)


def check_hv(doc: object) -> Hv:
    hv = check_object(doc, what="hv", required=frozenset(), optional=HV_KEYS)
    kernel = hv.get("kernel_path", "")
    if kernel:
        _match(kernel, what="hv.kernel_path", rule=KERNEL_PATH_RE)
    elif hv.get("kernel_args") or hv.get("initrd_path"):
        raise Refused("hv: kernel_args and initrd_path need kernel_path")
    initrd = hv.get("initrd_path", "")
    if initrd:
        _match(initrd, what="hv.initrd_path", rule=KERNEL_PATH_RE)
    cache = _choice(hv.get("disk_cache", "none"), what="hv.disk_cache", allowed=DISK_CACHE)
    aio = _choice(hv.get("disk_aio", "threads"), what="hv.disk_aio", allowed=DISK_AIO)
    if aio == "native" and cache not in ("none", "directsync"):
        raise Refused(f"hv.disk_aio native needs disk_cache none or directsync, not {cache!r}")
    cpu = hv.get("cpu_type", "")
    return Hv(
        accel=KVM_FLAG[_choice(hv.get("kvm_flag", ""), what="hv.kvm_flag", allowed=KVM_FLAG)],
        cpu_type=_match(cpu, what="hv.cpu_type", rule=CPU_RE) if cpu else "",
        machine_type=_match(hv.get("machine_type", "pc"), what="hv.machine_type", rule=MACHINE_RE),
        boot_order=BOOT_ORDER[
            _choice(hv.get("boot_order", "disk"), what="hv.boot_order", allowed=BOOT_ORDER)
        ],
        kernel_path=kernel,
        kernel_args=_match(hv.get("kernel_args", ""), what="hv.kernel_args", rule=KERNEL_ARGS_RE),
        initrd_path=initrd,
        disk_cache=cache,
        disk_aio=aio,
        usb_mouse=_choice(hv.get("usb_mouse", ""), what="hv.usb_mouse", allowed=USB_MOUSE),
        reboot_behavior=_choice(
            hv.get("reboot_behavior", "reboot"), what="hv.reboot_behavior", allowed=REBOOT
        ),
        nic_model=NIC_TYPES[
            _choice(hv.get("nic_type", "paravirtual"), what="hv.nic_type", allowed=NIC_TYPES)
        ],
    )


def check_vnc(doc: object, *, what: str = "vnc") -> int:
    vnc = check_object(doc, what=what, required=frozenset({"display"}))
    return check_number(vnc["display"], what=f"{what}.display", low=0, high=VNC_DISPLAY_MAX)


def check_seed(value: object) -> bool:
    return check_flag(value, what="seed")


# ----------------------------------------------------------------- argv


def machine_args(hv: Hv) -> list[str]:
    argv = ["-machine", f"{hv.machine_type},accel={hv.accel}"]
    if hv.cpu_type:
        argv += ["-cpu", hv.cpu_type]
    argv += ["-boot", f"order={hv.boot_order}"]
    if hv.kernel_path:
        argv += ["-kernel", hv.kernel_path]
        if hv.initrd_path:
            argv += ["-initrd", hv.initrd_path]
        if hv.kernel_args:
            argv += ["-append", hv.kernel_args]
    return argv + USB_MOUSE[hv.usb_mouse] + REBOOT[hv.reboot_behavior]


def drive_options(hv: Hv) -> str:
    direct = "on" if hv.disk_cache in ("none", "directsync") else "off"
    no_flush = "on" if hv.disk_cache == "unsafe" else "off"
    return f"cache.direct={direct},cache.no-flush={no_flush},aio={hv.disk_aio}"


def disk_drive(disk: Disk, hv: Hv) -> tuple[str, str]:
    """The -drive and -device values of one DRBD disk (also what a hotplug adds)."""
    node = f"drive-d{disk.index}"
    drive = f"file=/dev/drbd{disk.minor},format=raw,if=none,id={node},{drive_options(hv)}"
    device = f"virtio-blk-pci,drive={node},id=disk-d{disk.index},addr={DISK_SLOT + disk.index:#x}"
    return drive, device


def disk_args(disks: list[Disk], hv: Hv) -> list[str]:
    argv: list[str] = []
    for disk in disks:
        drive, device = disk_drive(disk, hv)
        argv += ["-drive", drive, "-device", device]
    return argv


def seed_args(vm_name: str) -> list[str]:
    return [
        "-drive",
        f"file={seed_path(vm_name)},format=raw,if=none,id=drive-seed,readonly=on",
        "-device",
        f"virtio-blk-pci,drive=drive-seed,id=disk-seed,addr={SEED_SLOT:#x}",
    ]


def nic_netdev(nic: Nic) -> str:
    # script=no: qemu creates the tap and runs nothing; the helper bridges it.
    return f"tap,id=net-n{nic.index},ifname={nic.tap},script=no,downscript=no"


def nic_device(nic: Nic) -> str:
    return (
        f"{nic.model},netdev=net-n{nic.index},id=nic-n{nic.index},mac={nic.mac},"
        f"addr={NIC_SLOT + nic.index:#x}"
    )


def nic_args(nics: list[Nic]) -> list[str]:
    argv: list[str] = []
    for nic in nics:
        argv += ["-netdev", nic_netdev(nic), "-device", nic_device(nic)]
    return argv


def vnc_args(display: int) -> list[str]:
    return ["-vnc", f"127.0.0.1:{display}", "-device", "VGA,addr=0x2"]


def bridge_argv(nic: Nic) -> list[list[str]]:
    """Put NIC's tap (made by qemu) on its bridge and bring it up."""
    return [
        ["ip", "link", "set", "dev", nic.tap, "master", nic.link],
        ["ip", "link", "set", "dev", nic.tap, "up"],
    ]


BRIDGES_ARGV = ["ip", "-j", "link", "show", "type", "bridge"]
