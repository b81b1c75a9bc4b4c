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
from events.model import DrbdResourceObs, NodeFacts, VmObs, VolumeObs
from events.specs import InstanceSpec
from reactors.naming import run_dir
from reactors.nodes.drbd_status import (
    DrbdParseError,
    parse_drbd_events2,
    parse_drbd_status_json,
    parse_drbd_version,
    parse_resource_hosts,
    peers_from_hosts,
)
from reactors.nodes.drbd_status import drbd_major as major_of
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


def _sudo(*argv: str) -> str:
    return "sudo -n " + q(*argv)


_LVM_REPORT = ("--reportformat", "json", "--units", "m", "--nosuffix", "-o")
PROBE_SECTIONS = 10


class DrbdVersionChanged(ParseError):
    """The probe was built for one DRBD major version and the node runs another
    (first contact, or a module upgraded across a reboot): probe again for it."""

    def __init__(self, major: int) -> None:
        super().__init__("probe", f"the node's DRBD module is now version {major}")
        self.major = major


def probe_line(*, drbd_major: int = 9) -> CommandLine:
    """All of a node's state in one exec, the parts separated by a marker line.
    DRBD state: `drbdsetup status --json` on 9; `events2` on 8.4, whose drbdsetup
    refuses --json (exit 20, and its usage text on stdout)."""
    drbd = (
        _sudo("drbdsetup", "status", "--json")
        if drbd_major >= 9
        else _sudo("drbdsetup", "events2", "--now", "--statistics")
    )
    parts = (
        q("nproc"),
        q("cat", "/proc/meminfo"),
        q("cat", "/proc/sys/kernel/random/boot_id"),
        q("hostname"),
        _sudo("vgs", *_LVM_REPORT, "vg_name,vg_size,vg_free"),
        _sudo("lvs", *_LVM_REPORT, "lv_name,vg_name,lv_size"),
        drbd,
        q("pgrep", "-a", "-f", "qemu-system-x86_64"),
        q("head", "-n", "1", "/proc/drbd"),
        # The peers of 8.4 connections, which events2 names only `peer` (the glob
        # is the remote shell's).
        q("grep", "-H", "-E", r"^[[:space:]]*on [^ ]+ [{]") + " /etc/drbd.d/*.res",
    )
    assert len(parts) == PROBE_SECTIONS
    return CommandLine(line=f" ; echo {SEPARATOR} ; ".join(parts), summary="probe")


def parse_probe(text: str, *, volume_group: str, drbd_major: int = 9) -> NodeSnapshot:
    """A probe's output, built by `probe_line(drbd_major=...)`; DrbdVersionChanged
    when the node's module is of the other major version."""
    sections = text.split(SEPARATOR + "\n")
    if len(sections) != PROBE_SECTIONS:
        raise ParseError("probe", f"expected {PROBE_SECTIONS} sections, got {len(sections)}")
    cpus_s, meminfo, boot_id, hostname, vgs, lvs, drbd, pgrep, proc_drbd, res_hosts = sections
    version = parse_drbd_version(proc_drbd)
    actual = major_of(version)
    if actual and actual != (9 if drbd_major >= 9 else 8):
        raise DrbdVersionChanged(actual)
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
        drbd_version=version,
    )
    peers = peers_from_hosts(parse_resource_hosts(res_hosts), me=facts.hostname)
    try:
        drbd_obs = (
            parse_drbd_status_json(drbd)
            if drbd_major >= 9
            else parse_drbd_events2(drbd, peers=peers)
        )
    except DrbdParseError as exc:
        raise ParseError(exc.command, str(exc)) from exc
    return NodeSnapshot(
        facts=facts,
        volumes=parse_lvs(lvs),
        drbd=drbd_obs,
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
    """`drbdsetup status --json` (DRBD 9)."""
    try:
        return parse_drbd_status_json(text)
    except DrbdParseError as exc:
        raise ParseError(exc.command, str(exc)) from exc


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


# How fast a peer notices a dead node, on both 8.4 and 9 (docs/real-nodes.md): a
# keep-alive every 2 s answered within 1 s, so a silent peer is dropped 2-3 s after
# its last word instead of DRBD's default 10-11 s; `timeout` (tenths) must stay
# below ping-int and connect-int. A false drop costs a short bitmap resync, never
# a failover: corral acts only when the orchestrator lost the node too (rule 7).
NET_TIMING = (("ping-int", "2"), ("ping-timeout", "10"), ("timeout", "15"), ("connect-int", "3"))


def resource_file(
    disk: DiskConfig, *, allow_two_primaries: bool = False, drbd_major: int = 9
) -> str:
    """A two-node resource for the node's DRBD module: DRBD 9 gets each host's
    node-id (its metadata remembers it); 8.4's drbdadm refuses the keyword, and
    without it the file is valid for both. Split-brain policies never discard data
    on their own except where nothing was written (safety rule 3)."""
    check_name(disk.resource, what="DRBD resource name")
    lines = [
        f"resource {disk.resource} {{",
        "  net {",
        "    protocol C;",
        f"    allow-two-primaries {'yes' if allow_two_primaries else 'no'};",
        "    after-sb-0pri discard-zero-changes;",
        "    after-sb-1pri disconnect;",
        "    after-sb-2pri disconnect;",
        *(f"    {key} {value};" for key, value in NET_TIMING),
        "  }",
    ]
    for host in disk.hosts:
        check_name(host.node, what="node name")
        if not re.fullmatch(r"[0-9a-fA-F:.]+", host.address):
            raise ValueError(f"replication address {host.address!r} is not an IP address")
        address = f"[{host.address}]" if ":" in host.address else host.address
        lines += [
            f"  on {host.node} {{",
            *([f"    node-id {host.node_id};"] if drbd_major >= 9 else []),
            f"    address {address}:{disk.port};",
            f"    device /dev/drbd{disk.minor} minor {disk.minor};",
            f"    disk /dev/{disk.volume_group}/{disk.resource};",
            "    meta-disk internal;",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- steps


def _write_config(disk: DiskConfig, *, two: bool = False, drbd_major: int = 9) -> CommandLine:
    path = f"/etc/drbd.d/{disk.resource}.res"
    return CommandLine(
        line=f"sudo -n tee {q(path)}",
        stdin=resource_file(disk, allow_two_primaries=two, drbd_major=drbd_major).encode(),
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


def step_lines(step: Step, *, drbd_major: int = 9) -> list[CommandLine]:
    """The command lines for one step on `step.node`, whose DRBD module is
    `drbd_major` (8 or 9); GROW_DISK's peer half and the QMP-driven steps are
    handled by `reactors.nodes.ssh_ops`."""
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
            _write_config(disk, drbd_major=drbd_major),
            CommandLine(
                line=drbdadm("create-md", "--force", disk.resource),
                summary=f"drbdadm create-md {disk.resource}",
            ),
            CommandLine(line=drbdadm("up", disk.resource), summary=f"drbdadm up {disk.resource}"),
        ]
    if k == StepKind.DRBD_UP and disk is not None:
        return [
            _write_config(disk, drbd_major=drbd_major),
            CommandLine(
                line=drbdadm("adjust", disk.resource), summary=f"drbdadm adjust {disk.resource}"
            ),
        ]
    if k in (StepKind.DRBD_DUAL_PRIMARY, StepKind.DRBD_SINGLE_PRIMARY) and disk is not None:
        return [
            _write_config(disk, two=k == StepKind.DRBD_DUAL_PRIMARY, drbd_major=drbd_major),
            CommandLine(
                line=drbdadm("adjust", disk.resource), summary=f"drbdadm adjust {disk.resource}"
            ),
        ]
    if k == StepKind.DRBD_DISCARD and disk is not None:
        return [
            _write_config(disk, drbd_major=drbd_major),
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
