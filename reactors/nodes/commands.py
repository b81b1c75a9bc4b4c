"""The catalog of node commands: pure builders (a planned Step, or a probe, to the
exact command lines run over SSH, every name validated and quoted) and pure parsers
(the real tools' output to typed observations, or a ParseError naming the command
and what did not parse).

Pure: no I/O, no logging. Formats are the real tools': `lvs/vgs --reportformat json`,
`drbdsetup status --json` (DRBD 9), `/proc/meminfo`, `pgrep -a`; tests check them
against captures.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from events.ids import check_name
from events.model import DrbdPeerObs, DrbdResourceObs, NodeFacts, VmObs, VolumeObs
from events.specs import InstanceSpec
from reactors.naming import run_dir
from reactors.plans.instance import DiskConfig, Step, StepKind
from reactors.seams import NodeSnapshot

SEPARATOR = "@@corral-probe@@"


class ParseError(ValueError):
    def __init__(self, command: str, detail: str) -> None:
        super().__init__(f"{command}: {detail}")
        self.command = command


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandLine:
    """One exec request: a shell-safe command line and what goes to its stdin."""

    line: str
    stdin: bytes = b""
    summary: str = ""
    ok_if_stderr: str = ""  # a non-zero exit whose stderr matches this regex is fine


def q(*argv: str) -> str:
    return " ".join(shlex.quote(a) for a in argv)


# ----------------------------------------------------------------------- probe

PROBE_PARTS = (
    ("nproc",),
    ("cat", "/proc/meminfo"),
    ("cat", "/proc/sys/kernel/random/boot_id"),
    ("hostname",),
    (
        "vgs",
        "--reportformat",
        "json",
        "--units",
        "m",
        "--nosuffix",
        "-o",
        "vg_name,vg_size,vg_free",
    ),
    (
        "lvs",
        "--reportformat",
        "json",
        "--units",
        "m",
        "--nosuffix",
        "-o",
        "lv_name,vg_name,lv_size",
    ),
    ("drbdsetup", "status", "--json"),
    ("pgrep", "-a", "-f", "qemu-system-x86_64"),
)


def probe_line() -> CommandLine:
    """All of a node's state in one exec: the parts separated by a marker line."""
    parts = [
        f"sudo -n {q(*p)}" if p[0] in ("vgs", "lvs", "drbdsetup") else q(*p) for p in PROBE_PARTS
    ]
    line = f" ; echo {SEPARATOR} ; ".join(parts)
    return CommandLine(line=line, summary="probe")


def parse_probe(text: str, *, volume_group: str) -> NodeSnapshot:
    sections = text.split(SEPARATOR + "\n")
    if len(sections) != len(PROBE_PARTS):
        raise ParseError("probe", f"expected {len(PROBE_PARTS)} sections, got {len(sections)}")
    cpus_s, meminfo, boot_id, hostname, vgs, lvs, drbd, pgrep = sections
    try:
        cpus = int(cpus_s.strip())
    except ValueError as exc:
        raise ParseError("nproc", f"not a number: {cpus_s.strip()[:40]!r}") from exc
    total, available = parse_meminfo(meminfo)
    vg_size, vg_free = parse_vgs(vgs, volume_group=volume_group)
    facts = NodeFacts(
        hostname=hostname.strip(),
        cpus=cpus,
        memory_total_mib=total,
        memory_free_mib=available,
        boot_id=boot_id.strip(),
        vg_size_mib=vg_size,
        vg_free_mib=vg_free,
    )
    return NodeSnapshot(
        facts=facts,
        volumes=parse_lvs(lvs),
        drbd=parse_drbd_status(drbd),
        vms=parse_pgrep(pgrep),
    )


def parse_meminfo(text: str) -> tuple[int, int]:
    values = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+):\s+(\d+)\s*kB", line)
        if m:
            values[m.group(1)] = int(m.group(2)) // 1024
    if "MemTotal" not in values:
        raise ParseError("cat /proc/meminfo", "no MemTotal line")
    return values["MemTotal"], values.get("MemAvailable", values.get("MemFree", 0))


def _lvm_rows(text: str, kind: str, command: str) -> list[dict[str, str]]:
    try:
        doc = json.loads(text)
        rows = doc["report"][0][kind]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ParseError(command, f"not an LVM JSON report: {text.strip()[:80]!r}") from exc
    if not isinstance(rows, list):
        raise ParseError(command, f"'{kind}' is not a list")
    return rows


def _mib(value: str, command: str) -> int:
    try:
        return int(float(value.rstrip("mM")))
    except ValueError as exc:
        raise ParseError(command, f"not a size in MiB: {value!r}") from exc


def parse_vgs(text: str, *, volume_group: str) -> tuple[int, int]:
    for row in _lvm_rows(text, "vg", "vgs"):
        if row.get("vg_name") == volume_group:
            return _mib(row["vg_size"], "vgs"), _mib(row["vg_free"], "vgs")
    return 0, 0


def parse_lvs(text: str) -> tuple[VolumeObs, ...]:
    vols = [
        VolumeObs(vg=row["vg_name"], name=row["lv_name"], size_mib=_mib(row["lv_size"], "lvs"))
        for row in _lvm_rows(text, "lv", "lvs")
    ]
    return tuple(sorted(vols, key=lambda v: (v.vg, v.name)))


def parse_drbd_status(text: str) -> tuple[DrbdResourceObs, ...]:
    text = text.strip()
    if not text:
        return ()
    try:
        doc = json.loads(text)
        resources = []
        for res in doc:
            devices = res.get("devices") or [{}]
            peers = []
            for conn in res.get("connections", []):
                pdev = (conn.get("peer_devices") or [{}])[0]
                peers.append(
                    DrbdPeerObs(
                        peer=str(conn["name"]),
                        connection=str(conn["connection-state"]),
                        peer_role=str(conn.get("peer-role", "Unknown")),
                        peer_disk=str(pdev.get("peer-disk-state", "DUnknown")),
                        replication=str(pdev.get("replication-state", "Off")),
                        percent_in_sync=float(pdev.get("percent-in-sync", 100.0)),
                    )
                )
            resources.append(
                DrbdResourceObs(
                    name=str(res["name"]),
                    role=str(res["role"]),
                    disk=str(devices[0].get("disk-state", "DUnknown")),
                    minor=int(devices[0]["minor"]) if "minor" in devices[0] else None,
                    peers=tuple(sorted(peers, key=lambda p: p.peer)),
                )
            )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ParseError("drbdsetup status --json", f"unexpected document: {exc}") from exc
    return tuple(sorted(resources, key=lambda r: r.name))


def parse_pgrep(text: str) -> tuple[VmObs, ...]:
    vms = []
    for line in text.splitlines():
        pid_s, _, cmdline = line.strip().partition(" ")
        if not pid_s.isdigit() or "qemu-system" not in cmdline:
            continue
        # pgrep -a prints /proc/PID/cmdline with its NULs as spaces: no quoting to
        # undo (and corral's argv never holds a space: names are validated).
        argv = cmdline.split()
        name = _arg(argv, "-name")
        if not name:
            continue
        name = name.split(",")[0].removeprefix("guest=")
        memory = _arg(argv, "-m") or "0"
        smp = _arg(argv, "-smp") or "1"
        try:
            mem = int(re.sub(r"\D", "", memory.split(",")[0]) or 0)
            if memory.upper().endswith("G"):
                mem *= 1024
            vcpus = int(smp.split(",")[0])
        except ValueError:
            mem, vcpus = 0, 0
        vms.append(VmObs(name=name, pid=int(pid_s), status="running", memory_mib=mem, vcpus=vcpus))
    return tuple(sorted(vms, key=lambda v: v.name))


def _arg(argv: list[str], flag: str) -> str | None:
    if flag in argv:
        i = argv.index(flag)
        return argv[i + 1] if i + 1 < len(argv) else None
    return None


# ----------------------------------------------------------------------- DRBD config


def resource_file(disk: DiskConfig, *, allow_two_primaries: bool = False) -> str:
    """A two-node DRBD 9 resource. Split-brain policies never discard data on their
    own except where nothing was written (safety rule 3)."""
    check_name(disk.resource, what="DRBD resource name")
    lines = [
        f"resource {disk.resource} {{",
        "  net {",
        "    protocol C;",
        f"    allow-two-primaries {'yes' if allow_two_primaries else 'no'};",
        "    after-sb-0pri discard-zero-changes;",
        "    after-sb-1pri disconnect;",
        "    after-sb-2pri disconnect;",
        "  }",
    ]
    for host in disk.hosts:
        check_name(host.node, what="node name")
        if not re.fullmatch(r"[0-9a-fA-F:.]+", host.address):
            raise ValueError(f"replication address {host.address!r} is not an IP address")
        address = f"[{host.address}]" if ":" in host.address else host.address
        lines += [
            f"  on {host.node} {{",
            f"    node-id {host.node_id};",
            f"    address {address}:{disk.port};",
            f"    device /dev/drbd{disk.minor} minor {disk.minor};",
            f"    disk /dev/{disk.volume_group}/{disk.resource};",
            "    meta-disk internal;",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- steps


def _write_config(disk: DiskConfig, *, two: bool = False) -> CommandLine:
    path = f"/etc/drbd.d/{disk.resource}.res"
    return CommandLine(
        line=f"sudo -n tee {q(path)}",
        stdin=resource_file(disk, allow_two_primaries=two).encode(),
        summary=f"write {path}",
    )


def drbdadm(*args: str) -> str:
    return "sudo -n " + q("drbdadm", *args)


def qemu_argv(
    *, spec: InstanceSpec, disks: tuple[DiskConfig, ...], incoming: tuple[str, int] | None = None
) -> list[str]:
    name = check_name(spec.name, what="instance name")
    base = run_dir()
    argv = [
        "qemu-system-x86_64",
        "-name",
        name,
        "-machine",
        "pc,accel=kvm:tcg",
        "-m",
        str(int(spec.memory_mib)),
        "-smp",
        str(int(spec.vcpus)),
        "-nodefaults",
        "-display",
        "none",
        "-daemonize",
        "-pidfile",
        f"{base}/{name}.pid",
        "-qmp",
        f"unix:{base}/{name}.qmp,server=on,wait=off",
        "-serial",
        f"unix:{base}/{name}.serial,server=on,wait=off",
    ]
    for disk in disks:
        argv += ["-drive", f"file=/dev/drbd{int(disk.minor)},format=raw,if=virtio,cache=none"]
    if incoming is not None:
        argv += ["-incoming", f"tcp:{incoming[0]}:{int(incoming[1])}"]
    return argv


def step_lines(step: Step) -> list[CommandLine]:
    """The command lines for one step on `step.node` (GROW_DISK's peer half and the
    QMP-driven steps are handled by `reactors.nodes.ssh_ops`)."""
    disk = step.disk
    k = step.kind
    if k == StepKind.CREATE_DISK and disk is not None:
        return [
            CommandLine(
                line="sudo -n "
                + q(
                    "lvcreate",
                    "-L",
                    f"{disk.size_mib}m",
                    "-n",
                    disk.resource,
                    disk.volume_group,
                    "-y",
                ),
                summary=f"lvcreate {disk.volume_group}/{disk.resource} {disk.size_mib}M",
            ),
            _write_config(disk),
            CommandLine(
                line=drbdadm("create-md", "--force", disk.resource),
                summary=f"drbdadm create-md {disk.resource}",
            ),
            CommandLine(line=drbdadm("up", disk.resource), summary=f"drbdadm up {disk.resource}"),
        ]
    if k == StepKind.DRBD_UP and disk is not None:
        return [
            _write_config(disk),
            CommandLine(
                line=drbdadm("adjust", disk.resource), summary=f"drbdadm adjust {disk.resource}"
            ),
        ]
    if k in (StepKind.DRBD_DUAL_PRIMARY, StepKind.DRBD_SINGLE_PRIMARY) and disk is not None:
        return [
            _write_config(disk, two=k == StepKind.DRBD_DUAL_PRIMARY),
            CommandLine(
                line=drbdadm("adjust", disk.resource), summary=f"drbdadm adjust {disk.resource}"
            ),
        ]
    if k == StepKind.DRBD_DISCARD and disk is not None:
        return [
            _write_config(disk),
            CommandLine(
                line=drbdadm("adjust", disk.resource), summary=f"drbdadm adjust {disk.resource}"
            ),
            CommandLine(
                line=drbdadm("disconnect", disk.resource),
                summary=f"drbdadm disconnect {disk.resource}",
            ),
            CommandLine(
                line=drbdadm("connect", "--discard-my-data", disk.resource),
                summary=f"drbdadm connect --discard-my-data {disk.resource}",
            ),
        ]
    if k == StepKind.DRBD_INITIAL_PRIMARY and disk is not None:
        return [
            CommandLine(
                line=drbdadm("primary", "--force", disk.resource),
                summary=f"drbdadm primary --force {disk.resource}",
            )
        ]
    if k == StepKind.DRBD_PRIMARY and disk is not None:
        return [
            CommandLine(
                line=drbdadm("primary", disk.resource), summary=f"drbdadm primary {disk.resource}"
            )
        ]
    if k == StepKind.DRBD_SECONDARY and disk is not None:
        return [
            CommandLine(
                line=drbdadm("secondary", disk.resource),
                summary=f"drbdadm secondary {disk.resource}",
            )
        ]
    if k == StepKind.GROW_DISK and disk is not None:
        return [
            CommandLine(
                line="sudo -n "
                + q("lvextend", "-L", f"{disk.size_mib}m", f"{disk.volume_group}/{disk.resource}"),
                summary=f"lvextend {disk.resource} to {disk.size_mib}M",
            )
        ]
    if k == StepKind.REMOVE_DISK and disk is not None:
        return [
            CommandLine(
                line=drbdadm("down", disk.resource),
                summary=f"drbdadm down {disk.resource}",
                ok_if_stderr="not defined|No such resource",
            ),
            CommandLine(
                line="sudo -n " + q("rm", "-f", f"/etc/drbd.d/{disk.resource}.res"),
                summary=f"rm {disk.resource}.res",
            ),
            CommandLine(
                line="sudo -n " + q("lvremove", "-f", f"{disk.volume_group}/{disk.resource}"),
                summary=f"lvremove {disk.volume_group}/{disk.resource}",
                ok_if_stderr="Failed to find logical volume",
            ),
        ]
    if k in (StepKind.START_VM, StepKind.START_VM_INCOMING) and step.spec is not None:
        incoming = (
            (step.migrate_address, step.migrate_port) if k == StepKind.START_VM_INCOMING else None
        )
        argv = qemu_argv(spec=step.spec, disks=step.disks, incoming=incoming)
        return [
            CommandLine(line="sudo -n " + q("mkdir", "-p", run_dir()), summary="mkdir /run/corral"),
            CommandLine(line="sudo -n " + q(*argv), summary=f"qemu start {step.instance}"),
        ]
    raise ValueError(f"{k.value} has no plain command lines")
