"""Reading a node: the one probe command (the helper's `probe`, whose sections are
the real tools' outputs) and the parsers of those outputs into typed observations
(`parse_probe`, and per tool `parse_meminfo`, `parse_vgs`, `parse_lvs`,
`parse_drbd_status`, `parse_pgrep`, `parse_bridges`), or a ParseError naming the
command and what did not parse. Formats are the real tools': `lvs/vgs
--reportformat json`, `drbdsetup status --json` (DRBD 9) or `events2` (8.4),
`/proc/meminfo`, `pgrep -a`, `ip -j link`; tests check them against captures.

Pure: no I/O, no logging. Must not build a command that changes a node (that is
`reactors.nodes.commands`).
"""

from __future__ import annotations

import functools
import json
import re

from events.model import DrbdResourceObs, NodeFacts, VmObs, VolumeObs
from reactors.nodes.commands import CommandLine, HelperRequest, ParseError, helper_line
from reactors.nodes.drbd_status import (
    DrbdParseError,
    parse_drbd_events2,
    parse_drbd_status_json,
    parse_drbd_version,
    parse_resource_hosts,
    peers_from_hosts,
)
from reactors.nodes.drbd_status import drbd_major as major_of
from reactors.seams import NodeSnapshot

SEPARATOR = "@@corral-probe@@"  # nodehelper.verbs.PROBE_SEPARATOR

PROBE_SECTIONS = 11  # 10 from a helper older than the bridges section


class DrbdVersionChanged(ParseError):
    """The probe was built for one DRBD major version and the node runs another
    (first contact, or a module upgraded across a reboot): probe again for it."""

    def __init__(self, major: int) -> None:
        super().__init__("probe", f"the node's DRBD module is now version {major}")
        self.major = major


def probe_line(*, drbd_major: int = 9) -> CommandLine:
    """All of a node's state in one exec: the helper's `probe`, whose sections are
    the real tools' outputs separated by a marker line. DRBD state: `drbdsetup
    status --json` on 9; `events2` on 8.4 (`--drbd84`), whose drbdsetup refuses
    --json (exit 20, and its usage text on stdout)."""
    args = () if drbd_major >= 9 else ("--drbd84",)
    return helper_line(HelperRequest(verb="probe", args=args, summary="probe"), term=None)


def parse_probe(text: str, *, volume_group: str, drbd_major: int = 9) -> NodeSnapshot:
    """A probe's output, built by `probe_line(drbd_major=...)`; DrbdVersionChanged
    when the node's module is of the other major version."""
    sections = text.split(SEPARATOR + "\n")
    if len(sections) not in (PROBE_SECTIONS - 1, PROBE_SECTIONS):
        raise ParseError("probe", f"expected {PROBE_SECTIONS} sections, got {len(sections)}")
    cpus_s, meminfo, boot_id, hostname, vgs, lvs, drbd, pgrep, proc_drbd, res_hosts = sections[:10]
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
        bridges=parse_bridges(sections[10]) if len(sections) > 10 else None,
    )
    try:
        if drbd_major >= 9:
            drbd_obs = _drbd_status_json(drbd)
        else:  # 8.4 names no peer: the resource files do
            peers = peers_from_hosts(parse_resource_hosts(res_hosts), me=facts.hostname)
            drbd_obs = parse_drbd_events2(drbd, peers=peers)
    except DrbdParseError as exc:
        raise ParseError(exc.command, str(exc)) from exc
    return NodeSnapshot(
        facts=facts,
        volumes=_lvs(lvs),
        drbd=drbd_obs,
        vms=_pgrep(pgrep),
    )


# The larger sections of a probe parsed once per distinct text: a node reports
# the same LVs, resources and VMs probe after probe (every node every second), and
# the parsers are pure, their results immutable. Two texts per node of a 200-node
# cluster fit.
@functools.lru_cache(maxsize=512)
def _lvs(text: str) -> tuple[VolumeObs, ...]:
    return parse_lvs(text)


@functools.lru_cache(maxsize=512)
def _pgrep(text: str) -> tuple[VmObs, ...]:
    return parse_pgrep(text)


@functools.lru_cache(maxsize=512)
def _drbd_status_json(text: str) -> tuple[DrbdResourceObs, ...]:
    return parse_drbd_status_json(text)


def parse_bridges(text: str) -> tuple[str, ...]:
    """`ip -j link show type bridge`: the bridges' names. iproute2 6.1 (Debian
    bookworm) prints an empty object for every link the type filter drops:
    `[{},{},{}]` on a host without bridges."""
    try:
        links = json.loads(text or "[]")
        return tuple(sorted(str(link["ifname"]) for link in links if link))
    except (ValueError, KeyError, TypeError) as exc:
        raise ParseError("ip -j link show type bridge", f"not ip's JSON: {text[:80]!r}") from exc


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
