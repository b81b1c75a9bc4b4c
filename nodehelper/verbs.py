"""The helper's fixed verbs: for each, which arguments and options it takes, whether
it mutates (and so needs the leader's term), whether it reads a JSON request on
stdin, and what it does once its arguments have validated. The real tools'
output is passed through as they print it (the probe in marked sections), so the
orchestrator keeps parsing the real formats.

Standard library only; acts only through the environment protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nodehelper.devices import BRIDGES_ARGV
from nodehelper.drbd import (
    DRBD_CONFIG_DIR,
    DRBDADM_ALLOWED,
    drbdadm_argv,
    resource_request,
    resource_text,
)
from nodehelper.env import NodeEnv, Outcome
from nodehelper.fields import (
    Refused,
    check_disk,
    check_name,
    check_size_mib,
    check_vg,
    parse_json_body,
)
from nodehelper.hotplug import hotplug, hotplug_request
from nodehelper.images import image_fetch, image_write
from nodehelper.osdef import os_script
from nodehelper.seed import seed_remove, seed_write
from nodehelper.terms import read_term
from nodehelper.vm import launch, start_request, vm_pid

PROTOCOL = 1
PROBE_SEPARATOR = "@@corral-probe@@"
# LVM must never scan DRBD devices: a Secondary's open fails (8.4) or it reads a
# guest's disk (a guest's own PVs would show up as the node's), and every probe
# would pay for opening each of them. Rejected per command, so a node's own
# lvm.conf need not be changed. The probe's vgs/lvs only read (`--readonly`: no
# lock, so a probe never waits behind a concurrent lvcreate's udev settle).
_LVM_CONFIG = ("--config", 'devices { global_filter = [ "r|^/dev/drbd|" ] }')
_LVM_REPORT = (
    "--readonly",
    *_LVM_CONFIG,
    "--reportformat",
    "json",
    "--units",
    "m",
    "--nosuffix",
    "-o",
)

Act = Callable[[NodeEnv], Outcome]
# (positional arguments, options given, stdin) -> what to do, or Refused.
Build = Callable[[list[str], list[str], bytes], Act]


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    mutating: bool
    arguments: tuple[str, ...]  # names of the positional arguments, for messages
    build: Build
    options: frozenset[str] = frozenset()
    body: bool = False  # reads a JSON request on stdin


def _said(text: str) -> Outcome:
    return Outcome(0, text.encode())


# ------------------------------------------------------------------ read-only


def _version(args: list[str], options: list[str], stdin: bytes) -> Act:
    return lambda env: _said(f"corral-node-helper {PROTOCOL}\n")


def _term(args: list[str], options: list[str], stdin: bytes) -> Act:
    return lambda env: _said(f"{read_term(env)}\n")


def _probe(args: list[str], options: list[str], stdin: bytes) -> Act:
    return lambda env: probe(env, drbd84="--drbd84" in options)


def probe(env: NodeEnv, *, drbd84: bool = False) -> Outcome:
    """All of the node's state in one answer, sections in this order. DRBD state:
    `drbdsetup status --json` (DRBD 9), or `events2` for 8.4 (`--drbd84`), whose
    drbdsetup has no --json; then the module's version line, and the `on HOST {`
    lines of the resource files (8.4's events2 names a peer only `peer`), and the
    node's bridges (`ip -j link show type bridge`)."""
    drbd = ["events2", "--now", "--statistics"] if drbd84 else ["status", "--json"]
    resource_files = env.glob(f"{DRBD_CONFIG_DIR}/*.res")
    parts = [
        env.run(["nproc"]),
        Outcome(0, env.read_file("/proc/meminfo") or b""),
        Outcome(0, env.read_file("/proc/sys/kernel/random/boot_id") or b""),
        env.run(["hostname"]),
        env.run(["vgs", *_LVM_REPORT, "vg_name,vg_size,vg_free"]),
        env.run(["lvs", *_LVM_REPORT, "lv_name,vg_name,lv_size"]),
        env.run(["drbdsetup", *drbd]),
        env.run(["pgrep", "-a", "-f", "qemu-system-x86_64"]),
        env.run(["head", "-n", "1", "/proc/drbd"]),
        env.run(["grep", "-H", "-E", r"^[[:space:]]*on [^ ]+ [{]", *resource_files])
        if resource_files
        else Outcome(1),
        env.run(BRIDGES_ARGV),
    ]
    separator = f"{PROBE_SEPARATOR}\n".encode()
    return Outcome(0, separator.join(p.stdout for p in parts), b"".join(p.stderr for p in parts))


# ------------------------------------------------------------------ LVM


def _lv_create(args: list[str], options: list[str], stdin: bytes) -> Act:
    vg, lv, size = check_vg(args[0]), check_disk(args[1], what="LV"), check_size_mib(args[2])
    return lambda env: env.run(["lvcreate", "-L", f"{size}m", "-n", lv, vg, "-y"])


def _lv_extend(args: list[str], options: list[str], stdin: bytes) -> Act:
    vg, lv, size = check_vg(args[0]), check_disk(args[1], what="LV"), check_size_mib(args[2])
    return lambda env: env.run(["lvextend", "-L", f"{size}m", f"{vg}/{lv}"])


def _lv_remove(args: list[str], options: list[str], stdin: bytes) -> Act:
    vg, lv = check_vg(args[0]), check_disk(args[1], what="LV")
    return lambda env: env.run(["lvremove", "-f", f"{vg}/{lv}"])


def _lv_rename(args: list[str], options: list[str], stdin: bytes) -> Act:
    vg = check_vg(args[0])
    old, new = check_disk(args[1], what="LV"), check_disk(args[2], what="new LV")
    return lambda env: env.run(["lvrename", vg, old, new])


# ------------------------------------------------------------------ DRBD


def _drbd_config(args: list[str], options: list[str], stdin: bytes) -> Act:
    res = resource_request(parse_json_body(stdin, what="drbd-config"))
    text = resource_text(res).encode()

    def act(env: NodeEnv) -> Outcome:
        env.write_file(res.path, text)
        return _said(f"wrote {res.path}\n")

    return act


def _drbd_remove_config(args: list[str], options: list[str], stdin: bytes) -> Act:
    path = f"{DRBD_CONFIG_DIR}/{check_disk(args[0], what='resource')}.res"

    def act(env: NodeEnv) -> Outcome:
        return _said(f"removed {path}\n" if env.remove_file(path) else f"{path} was absent\n")

    return act


def _drbdadm(args: list[str], options: list[str], stdin: bytes) -> Act:
    argv = drbdadm_argv(args[0], options, args[1])
    return lambda env: env.run(argv)


# ------------------------------------------------------------------ VMs


def _vm_start(args: list[str], options: list[str], stdin: bytes) -> Act:
    start = start_request(parse_json_body(stdin, what="vm-start"))

    return lambda env: launch(env, start)


def _vm_hotplug(args: list[str], options: list[str], stdin: bytes) -> Act:
    plug = hotplug_request(parse_json_body(stdin, what="vm-hotplug"))
    return lambda env: hotplug(env, plug)


def _vm_signal(signal: str) -> Build:
    def build(args: list[str], options: list[str], stdin: bytes) -> Act:
        vm_name = check_name(args[0], what="VM name")

        def act(env: NodeEnv) -> Outcome:
            pid = vm_pid(env, vm_name)
            if pid is None:
                return _said(f"{vm_name} is not running\n")
            done = env.run(["kill", signal, str(pid)])
            if done.rc != 0:
                return done
            return _said(f"sent {signal} to {vm_name} ({pid})\n")

        return act

    return build


def _batch(args: list[str], options: list[str], stdin: bytes) -> Act:
    def act(env: NodeEnv) -> Outcome:
        raise Refused("a batch runs from the entry point (nodehelper.main.run_batch)")

    return act


VERBS: dict[str, Verb] = {
    v.name: v
    for v in (
        Verb("version", False, (), _version),
        Verb("term", False, (), _term),
        Verb("probe", False, (), _probe, options=frozenset({"--drbd84"})),
        Verb("lv-create", True, ("VG", "LV", "SIZE_MIB"), _lv_create),
        Verb("lv-extend", True, ("VG", "LV", "SIZE_MIB"), _lv_extend),
        Verb("lv-remove", True, ("VG", "LV"), _lv_remove),
        Verb("lv-rename", True, ("VG", "LV", "NEW_LV"), _lv_rename),
        Verb("drbd-config", True, (), _drbd_config, body=True),
        Verb("drbd-remove-config", True, ("RESOURCE",), _drbd_remove_config),
        Verb(
            "drbdadm",
            True,
            ("SUBCOMMAND", "RESOURCE"),
            _drbdadm,
            options=frozenset().union(*DRBDADM_ALLOWED.values()),
        ),
        Verb("image-write", True, ("IMAGE", "SHA256", "FORMAT", "MINOR"), image_write),
        Verb("image-fetch", True, ("IMAGE", "SHA256", "URL"), image_fetch),
        Verb("os-create", True, (), os_script("create"), body=True),
        Verb("os-rename", True, (), os_script("rename"), body=True),
        Verb("seed-write", True, (), seed_write, body=True),
        Verb("seed-remove", True, ("NAME",), seed_remove),
        Verb("vm-start", True, (), _vm_start, body=True),
        Verb("vm-hotplug", True, (), _vm_hotplug, body=True),
        Verb("vm-stop", True, ("NAME",), _vm_signal("-15")),
        Verb("vm-kill", True, ("NAME",), _vm_signal("-9")),
        Verb("batch", True, (), _batch, body=True),
    )
}
