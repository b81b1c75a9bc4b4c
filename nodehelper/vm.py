"""KVM on the node: the qemu argv the helper builds itself from a validated start
request (never from option strings the caller sends: `-drive file=/etc/shadow` or
`-chardev` would be root access), and finding a VM's process by name for a stop
(its pidfile read by the helper and checked against /proc before any signal).

The request is plain JSON: {"name", "memory_mib", "vcpus", "disks": [{"index",
"minor"}], "incoming": {"address", "port"}} and the optional device fields of
`nodehelper.devices` (nics, vnc, seed, hv). Standard library only; builds argv
and reads through the environment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nodehelper.devices import (
    BRIDGES_ARGV,
    Disk,
    Hv,
    Nic,
    bridge_argv,
    check_disk_entry,
    check_hv,
    check_nics,
    check_seed,
    check_vnc,
    disk_args,
    machine_args,
    nic_args,
    seed_args,
    seed_path,
    vnc_args,
)
from nodehelper.env import NodeEnv, Outcome
from nodehelper.fields import (
    DISKS_MAX,
    MEMORY_MIB_MAX,
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
_VM_OPTIONAL = frozenset({"incoming", "nics", "vnc", "seed", "hv"})


@dataclass(frozen=True, slots=True)
class VmStart:
    name: str
    argv: list[str]
    nics: tuple[Nic, ...] = ()
    seed: str = ""  # the seed image's path, when the request asked for one
    hv: Hv = Hv()

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
    hv = check_hv(req.get("hv", {}))
    nics = check_nics(req.get("nics", []), vm_name=vm_name, hv=hv)
    seed = check_seed(req.get("seed", False))
    argv = [
        QEMU,
        "-name",
        vm_name,
        *machine_args(hv),
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
    argv += disk_args(_disks(req["disks"]), hv)
    if seed:
        argv += seed_args(vm_name)
    argv += nic_args(nics)
    if "vnc" in req:
        argv += vnc_args(check_vnc(req["vnc"]))
    if "incoming" in req:
        argv += _incoming_args(req["incoming"])
    return VmStart(
        name=vm_name, argv=argv, nics=tuple(nics), seed=seed_path(vm_name) if seed else "", hv=hv
    )


def _disks(docs: Any) -> list[Disk]:
    if not isinstance(docs, list) or not 1 <= len(docs) <= DISKS_MAX:
        raise Refused(f"vm-start: disks must be a list of 1..{DISKS_MAX}")
    disks = [check_disk_entry(doc, where=f"disks[{i}]") for i, doc in enumerate(docs)]
    for field in ("index", "minor"):
        seen: set[int] = set()
        for i, disk in enumerate(disks):
            value = getattr(disk, field)
            if value in seen:
                raise Refused(f"vm-start: disks[{i}].{field} {value} is used twice")
            seen.add(value)
    return disks


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


def node_bridges(env: NodeEnv) -> set[str] | Outcome:
    """The node's bridges (`ip -j link show type bridge`), or the failed run."""
    done = env.run(BRIDGES_ARGV)
    if done.rc != 0:
        return done
    try:
        links = json.loads(done.stdout.decode() or "[]")
        # iproute2 6.1 prints {} for each link the type filter drops
        return {str(link["ifname"]) for link in links if link}
    except (ValueError, KeyError, TypeError):
        return Outcome(70, b"", b"ip -j link show type bridge: not ip's JSON\n")


def launch(env: NodeEnv, start: VmStart) -> Outcome:
    """Check what the argv needs on the node (seed image, bridges), run qemu, then
    put each NIC's tap on its bridge; a tap that cannot be bridged kills the new
    qemu again, so a refused start leaves nothing running."""
    if start.seed and not env.glob(start.seed):
        raise Refused(f"seed: {start.seed} does not exist")
    if start.nics:
        bridges = node_bridges(env)
        if isinstance(bridges, Outcome):
            return bridges
        for nic in start.nics:
            if nic.link not in bridges:
                raise Refused(f"nics[{nic.index}].link: this node has no bridge {nic.link!r}")
    env.make_run_dir(RUN_DIR)
    done = env.run(start.argv)
    if done.rc != 0:
        return done
    for socket in start.sockets:
        env.share_socket(socket)
    for nic in start.nics:
        for argv in bridge_argv(nic):
            bridged = env.run(argv)
            if bridged.rc != 0:
                pid = vm_pid(env, start.name)
                if pid is not None:
                    env.run(["kill", "-9", str(pid)])
                return bridged
    return done
