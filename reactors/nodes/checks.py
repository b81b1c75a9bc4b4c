"""What a node needs before corral trusts it, as one gathering script run over SSH
(as root, or through the operator's sudo) and a pure judgement of its output: one
line per prerequisite with ok or failed and, when failed, the fix. Also the
`--install` script that makes a fresh Debian host pass: packages with apt, the
kernel modules loaded now and at boot, the `corral` account with the
orchestrator's key, the node helper and the sudoers rule allowing only it.

Pure: no I/O, no logging. The scripts are text for `sh -s`; every value that
reaches them is validated here first (full-string matches) and quoted.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from events.model import NodeCheckLine
from reactors.nodes.drbd_status import drbd_major, parse_drbd_version

MARK = "@@corral-check@@"
PACKAGES = {
    "drbd-utils": "drbdadm",
    "lvm2": "lvm",
    "qemu-system-x86": "qemu",
    "python3": "python3 (the node helper)",
    "sudo": "sudo",
    "iproute2": "iproute2",
}
CORRAL_USER = "corral"
SUDOERS_FILE = "/etc/sudoers.d/corral"
MODULES_FILE = "/etc/modules-load.d/corral.conf"
# Event times and the heal timeline are wall-clock; health uses monotonic time, and
# DRBD none at all. Ganeti's verify allows 150 s; node VMs under TCG drift about a
# second in minutes without NTP (seen here).
MAX_CLOCK_OFFSET_S = 5.0
_VG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
_BRIDGE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_KEY = re.compile(r"(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]+( [^\n'\"\\]{0,100})?")

# The one program the corral account may run as root (docs/node-helper.md), and the
# sudoers rule allowing only it.
HELPER_PATH = "/usr/local/lib/corral/corral-node-helper"
HELPER_VERSION = "corral-node-helper 1"
SUDOERS_RULE = f"{CORRAL_USER} ALL=(root) NOPASSWD: {HELPER_PATH}"
_HELPER_END = "CORRAL_NODE_HELPER_EOF"


CheckResult = NodeCheckLine


def check_line(check: CheckResult) -> str:
    """`ok     name   detail`, or `FAILED name   detail` and the fix under it."""
    status = "ok    " if check.ok else "FAILED"
    text = f"{status} {check.name:<20} {check.detail}"
    return text + (f"\n       {'':<20} fix: {check.fix}" if not check.ok and check.fix else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Requirements:
    """What the node is declared to offer, and what the cluster needs of it."""

    volume_group: str = "corral"
    memory_mib: int | None = None  # None: take what the node has
    disk_mib: int | None = None
    bridges: tuple[str, ...] = ()
    replication_address: str | None = None
    corral_key: str | None = None  # the orchestrator's public key for the corral account


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeReport:
    checks: tuple[CheckResult, ...]
    drbd_version: str
    memory_mib: int
    vg_free_mib: int
    cpus: int
    hostname: str

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def validate(req: Requirements) -> None:
    """Refuse values that would reach a script unless they are what they claim."""
    if not _VG.fullmatch(req.volume_group):
        raise ValueError(f"volume group {req.volume_group!r} is not a volume group name")
    for bridge in req.bridges:
        if not _BRIDGE.fullmatch(bridge):
            raise ValueError(f"bridge {bridge!r} is not an interface name")
    if req.replication_address is not None:
        ipaddress.ip_address(req.replication_address)
    if req.corral_key is not None and not _KEY.fullmatch(req.corral_key.strip()):
        raise ValueError("the corral account's key is not one OpenSSH public key line")


SECTIONS = (
    "hostname",
    "kernel",
    "os",
    "modprobe-drbd",
    "proc-drbd",
    "modprobe-kvm",
    "dev-kvm",
    "dpkg",
    "vgs",
    "bridges",
    "addresses",
    "time",
    "ntp",
    "meminfo",
    "nproc",
    "corral",
    "sudoers",
    "helper",
    "modules-load",
    "python3",
)


def gather_script() -> str:
    """Everything the checks look at, one section per marker line. Loading the
    modules is part of checking that they load."""
    cmds = {
        "hostname": "hostname",
        "kernel": "uname -r",
        "os": '. /etc/os-release 2>/dev/null; echo "${ID:-unknown} ${VERSION_ID:-}"',
        "modprobe-drbd": 'modprobe drbd 2>&1; echo "rc=$?"',
        "proc-drbd": "head -n 1 /proc/drbd 2>/dev/null",
        "modprobe-kvm": "{ grep -q -E 'vmx' /proc/cpuinfo && modprobe kvm_intel 2>&1 ||"
        ' modprobe kvm_amd 2>&1; }; echo "rc=$?"',
        "dev-kvm": "test -c /dev/kvm && echo present || echo absent",
        "dpkg": "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' "
        + " ".join(PACKAGES)
        + " 2>/dev/null",
        "vgs": "vgs --reportformat json --units m --nosuffix -o vg_name,vg_size,vg_free"
        " 2>/dev/null",
        "bridges": "ip -o link show type bridge 2>/dev/null | cut -d: -f2",
        "addresses": "ip -o addr show 2>/dev/null | awk '{print $4}'",
        "time": "date +%s.%N",
        "ntp": "timedatectl show -p NTPSynchronized --value 2>/dev/null || echo unknown",
        "meminfo": "cat /proc/meminfo",
        "nproc": "nproc",
        "corral": f"id -u {CORRAL_USER} 2>/dev/null && cat ~{CORRAL_USER}/.ssh/authorized_keys"
        " 2>/dev/null",
        # Valid, and the helper's rule exactly (an older, wider rule is replaced).
        "sudoers": f"test -f {SUDOERS_FILE} && visudo -c -q -f {SUDOERS_FILE}"
        f" && grep -qxF {shlex.quote(SUDOERS_RULE)} {SUDOERS_FILE} && echo valid || echo absent",
        "helper": f"stat -c '%U %a' {HELPER_PATH} 2>/dev/null && {HELPER_PATH} version 2>&1",
        "modules-load": f"cat {MODULES_FILE} 2>/dev/null",
        "python3": "python3 -c 'import sys; print(sys.version.split()[0])' 2>/dev/null",
    }
    assert tuple(cmds) == SECTIONS
    lines = ["export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    for name in SECTIONS:
        lines += [f"echo {MARK}{name}", cmds[name]]
    return "\n".join(lines) + "\n"


def parse_gathered(text: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith(MARK):
            current = line[len(MARK) :].strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    missing = [s for s in SECTIONS if s not in sections]
    if missing:
        raise ValueError(f"the node's answer lacks sections {missing}: not a shell?")
    return sections


def _meminfo_mib(text: str, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) // 1024 if m else 0


def _vg(text: str, name: str) -> tuple[int, int] | None:
    try:
        rows = json.loads(text)["report"][0]["vg"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    for row in rows:
        if row.get("vg_name") == name:
            return int(float(row["vg_size"])), int(float(row["vg_free"]))
    return None


def _mib(value: int) -> str:
    return f"{value / 1024:.1f}G" if value >= 1024 else f"{value}M"


def judge(
    sections: Mapping[str, str], req: Requirements, *, local_time: float, rtt_s: float
) -> NodeReport:
    """One CheckResult per prerequisite. `local_time` is the orchestrator's clock
    halfway through the round trip that read the node's."""
    s = {k: v.strip() for k, v in sections.items()}
    checks: list[CheckResult] = []
    add = checks.append

    installed = {
        line.split()[0]
        for line in s["dpkg"].splitlines()
        if len(line.split()) >= 2 and line.split()[1].startswith("ii")
    }
    for pkg, what in PACKAGES.items():
        ok = pkg in installed
        add(
            CheckResult(
                name=f"package {pkg}",
                ok=ok,
                detail="installed" if ok else f"not installed ({what})",
                fix=f"apt-get install {pkg} (or corral node add --install)",
            )
        )

    loaded = s["modprobe-drbd"].endswith("rc=0")
    version = parse_drbd_version(s["proc-drbd"])
    err = s["modprobe-drbd"].rsplit("rc=", 1)[0].strip().splitlines()
    add(
        CheckResult(
            name="drbd module",
            ok=loaded,
            detail=f"loads (DRBD {version})"
            if loaded
            else f"does not load: {(err or ['?'])[-1][:160]}",
            fix="the distribution kernel ships drbd (Debian: linux-image-amd64); look for an "
            "'install drbd' or 'blacklist drbd' line in /etc/modprobe.d and remove it",
        )
    )
    major = drbd_major(version)
    add(
        CheckResult(
            name="drbd version",
            ok=loaded and (version.startswith("8.4.") or major == 9),
            detail=f"{version} ({'8.4' if major == 8 else major})"
            if version
            else "unknown (not loaded)",
            fix="corral speaks DRBD 8.4 (distribution kernels) and 9 (LINBIT's drbd-dkms)",
        )
    )
    boot = "drbd" in s["modules-load"].split()
    add(
        CheckResult(
            name="drbd at boot",
            ok=boot,
            detail=f"{MODULES_FILE} loads drbd" if boot else f"{MODULES_FILE} does not load drbd",
            fix=f"echo drbd >> {MODULES_FILE} (or --install)",
        )
    )

    kvm = s["dev-kvm"] == "present"
    add(
        CheckResult(
            name="kvm",
            ok=kvm,
            detail="/dev/kvm present" if kvm else "no /dev/kvm after loading kvm_intel/kvm_amd",
            fix="enable VT-x/AMD-V in the firmware, then modprobe kvm_intel (or kvm_amd)",
        )
    )

    vg = _vg(s["vgs"], req.volume_group)
    if vg is None:
        add(
            CheckResult(
                name="volume group",
                ok=False,
                detail=f"no volume group {req.volume_group!r}",
                fix=f"pvcreate /dev/DISK && vgcreate {req.volume_group} /dev/DISK",
            )
        )
        vg_free = 0
    else:
        size, vg_free = vg
        want = req.disk_mib or 0
        add(
            CheckResult(
                name="volume group",
                ok=vg_free >= want,
                detail=f"{req.volume_group}: {_mib(vg_free)} free of {_mib(size)}"
                + (f", {_mib(want)} declared" if want else ""),
                fix=f"extend {req.volume_group} (vgextend) or declare --disk {_mib(vg_free)}",
            )
        )

    memory = _meminfo_mib(s["meminfo"], "MemTotal")
    if req.memory_mib is not None:
        add(
            CheckResult(
                name="memory",
                ok=memory >= req.memory_mib,
                detail=f"{_mib(memory)} total, {_mib(req.memory_mib)} declared",
                fix=f"declare --memory {_mib(memory)} or less",
            )
        )

    bridges = set(s["bridges"].split())
    for bridge in req.bridges:
        add(
            CheckResult(
                name=f"bridge {bridge}",
                ok=bridge in bridges,
                detail="present" if bridge in bridges else "absent (the cluster's NICs use it)",
                fix=f"create bridge {bridge} in /etc/network/interfaces or systemd-networkd",
            )
        )

    if req.replication_address is not None:
        have = {a.split("/")[0] for a in s["addresses"].split()}
        ok = req.replication_address in have
        add(
            CheckResult(
                name="replication address",
                ok=ok,
                detail=f"{req.replication_address} "
                + ("configured" if ok else "not on any interface"),
                fix="configure the replication address on the node's replication NIC",
            )
        )

    try:
        offset = float(s["time"]) - local_time
    except ValueError:
        offset = float("inf")
    ok = abs(offset) <= MAX_CLOCK_OFFSET_S + rtt_s / 2
    add(
        CheckResult(
            name="clock",
            ok=ok,
            detail=f"{offset:+.2f} s from this host (NTP synchronized: {s['ntp'] or 'unknown'})",
            fix="run NTP on every node and orchestrator (systemd-timesyncd or chrony)",
        )
    )

    py = s["python3"]
    add(
        CheckResult(
            name="python3",
            ok=bool(py) and py.split(".")[0] == "3",
            detail=f"python {py}" if py else "absent (the node helper needs it)",
            fix="apt-get install python3",
        )
    )

    lines = s["corral"].splitlines()
    has_user = bool(lines) and lines[0].isdigit()
    keys = [k.strip() for k in lines[1:]]
    key_ok = req.corral_key is None or _key_body(req.corral_key) in {_key_body(k) for k in keys}
    add(
        CheckResult(
            name="corral account",
            ok=has_user and key_ok,
            detail=(
                "present, with the orchestrator's key"
                if has_user and key_ok
                else ("present, without the orchestrator's key" if has_user else "absent")
            ),
            fix="corral node add --install (creates it with the orchestrator's key)",
        )
    )
    sudo_ok = s["sudoers"] == "valid"
    add(
        CheckResult(
            name="sudoers rule",
            ok=sudo_ok,
            detail=f"{SUDOERS_FILE} allows the node helper only"
            if sudo_ok
            else f"{SUDOERS_FILE} absent, invalid, or not the node helper's rule",
            fix="corral node add --install",
        )
    )
    helper = s["helper"].splitlines()
    helper_ok = helper == ["root 755", HELPER_VERSION]
    add(
        CheckResult(
            name="node helper",
            ok=helper_ok,
            detail=f"{HELPER_PATH} ({HELPER_VERSION}, root's, mode 755)"
            if helper_ok
            else f"{HELPER_PATH}: {' / '.join(helper) or 'absent'}",
            fix="corral node add --install (installs it)",
        )
    )

    try:
        cpus = int(s["nproc"])
    except ValueError:
        cpus = 0
    return NodeReport(
        checks=tuple(checks),
        drbd_version=version,
        memory_mib=memory,
        vg_free_mib=vg_free,
        cpus=cpus,
        hostname=s["hostname"],
    )


def _key_body(line: str) -> str:
    parts = line.split()
    return " ".join(parts[:2]) if len(parts) >= 2 else line


def install_script(report: NodeReport, req: Requirements, *, helper: str) -> str:
    """Shell (for `sh -s`, as root) making a fresh Debian host pass what `report`
    failed that can be fixed without a person: packages, modules now and at boot,
    the corral account with the orchestrator's key, the node helper (`helper`, the
    built file's text) and the sudoers rule allowing only it."""
    validate(req)
    if not helper.startswith("#!/usr/bin/python3 -IS\n") or _HELPER_END in helper:
        raise ValueError("helper is not a built node helper (python -m nodehelper.bundle)")
    failed = {c.name for c in report.checks if not c.ok}
    lines = ["set -e", "export DEBIAN_FRONTEND=noninteractive LC_ALL=C"]
    packages = [p for p in PACKAGES if f"package {p}" in failed]
    if packages:
        pkgs = " ".join(shlex.quote(p) for p in packages)
        lines += [
            "apt-get update -q >/dev/null",
            f"apt-get install -y -q --no-install-recommends {pkgs} >/dev/null",
        ]
    lines += [
        f"mkdir -p {shlex.quote(MODULES_FILE.rsplit('/', 1)[0])}",
        f"grep -qx drbd {MODULES_FILE} 2>/dev/null || echo drbd >> {MODULES_FILE}",
        "modprobe drbd || true",
    ]
    if req.corral_key is not None:
        key = shlex.quote(req.corral_key.strip())
        home = f"/home/{CORRAL_USER}"
        lines += [
            f"id -u {CORRAL_USER} >/dev/null 2>&1 || useradd --system --create-home "
            f"--home-dir {home} --shell /bin/bash {CORRAL_USER}",
            f"install -d -m 700 -o {CORRAL_USER} -g {CORRAL_USER} {home}/.ssh",
            f"grep -qxF {key} {home}/.ssh/authorized_keys 2>/dev/null || "
            f"echo {key} >> {home}/.ssh/authorized_keys",
            f"chown {CORRAL_USER}: {home}/.ssh/authorized_keys",
            f"chmod 600 {home}/.ssh/authorized_keys",
        ]
    lines += [
        "install -d -o root -g root -m 0755 /usr/local/lib/corral /var/lib/corral",
        f"cat > {HELPER_PATH}.new <<'{_HELPER_END}'",
        helper.rstrip("\n"),
        _HELPER_END,
        f"chown root:root {HELPER_PATH}.new && chmod 0755 {HELPER_PATH}.new",
        f"mv -f {HELPER_PATH}.new {HELPER_PATH}",
        f"umask 077; printf '%s\\n' {shlex.quote(SUDOERS_RULE)} > {SUDOERS_FILE}.new",
        f"visudo -c -q -f {SUDOERS_FILE}.new",
        f"chmod 440 {SUDOERS_FILE}.new && mv {SUDOERS_FILE}.new {SUDOERS_FILE}",
        "mkdir -p /etc/drbd.d /var/lib/corral",
    ]
    return "\n".join(lines) + "\n"
