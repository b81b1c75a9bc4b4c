"""The `os-create` and `os-rename` verbs: a Ganeti OS definition (a directory of
scripts under Ganeti's OS search path, e.g. instance-debootstrap's) run for an
instance as Ganeti's OS API runs it: the definition found and checked first
(`ganeti_api_version` naming 20, 15 or 10, the required scripts there, the variant
in `variants.list`, the parameters in `parameters.list` and accepted by `verify`),
then its `create` (or `rename`, with OLD_INSTANCE_NAME) with the API's environment
and nothing else, in its directory, its output in a log file under LOG_DIR (never
on the helper's own output, which carries only the log's last lines on failure).

Standard library only; acts only through the environment protocol. A definition
that is missing or unusable is refused before any script runs: nothing touches a
disk. The definition is named, never given as a path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodehelper.devices import LINK_RE, MAC_RE, NICS_MAX
from nodehelper.env import NodeEnv, Outcome
from nodehelper.fields import (
    DISKS_MAX,
    MEMORY_MIB_MAX,
    SIZE_MIB_MAX,
    VCPUS_MAX,
    Refused,
    check_address,
    check_flag,
    check_name,
    check_number,
    check_object,
    parse_json_body,
)
from nodehelper.images import EX_DATAERR, EX_NOINPUT

# Ganeti's default search path (/srv/ganeti/os), then the directories Debian's and
# others' Ganeti builds add (Debian's ganeti-instance-debootstrap installs into
# /usr/share/ganeti/os).
OS_SEARCH_PATH = (
    "/srv/ganeti/os",
    "/usr/local/lib/ganeti/os",
    "/usr/lib/ganeti/os",
    "/usr/share/ganeti/os",
)
OS_API_VERSIONS = (20, 15, 10)  # Ganeti's constants.OS_API_VERSIONS; the highest shared wins
LOG_DIR = "/var/log/corral/os"  # as Ganeti's /var/log/ganeti/os
SCRIPT_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"  # Ganeti's constants.HOOKS_PATH
SCRIPT_TIMEOUT_S = 4 * 3600.0
# EX_DATAERR (65): the definition is unusable (API version, variant, files,
# parameters); EX_NOINPUT (66): no definition of that name in the search path.
EX_SCRIPT_FAILED = 71  # its script ran and failed (or timed out)
TAIL_SAID = 160
PARAMS_MAX = 32
_PART_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?")
_PARAM_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_VALUE_RE = re.compile(r"[ -~]{0,1024}")
_HV_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_DEVICE_RE = re.compile(r"/dev/drbd(0|[1-9][0-9]{0,6})")
_OS_REQUIRED = frozenset({"os", "instance", "primary", "disks"})
_OS_OPTIONAL = frozenset({"secondaries", "nics", "be", "hv", "params", "reinstall", "old_name"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Definition:
    name: str
    path: str
    api_version: int
    variants: tuple[str, ...]
    parameters: tuple[str, ...]
    files: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptRun:
    script: str  # "create" or "rename"
    os_name: str  # NAME+VARIANT or NAME
    provider: str
    variant: str
    instance: str
    old_name: str
    env: dict[str, str]  # the request's part of the environment (OSP_* apart)
    params: dict[str, str]
    reinstall: bool


def _text_map(value: object, *, what: str, key_re: re.Pattern[str]) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > PARAMS_MAX:
        raise Refused(f"{what} must be a JSON object of at most {PARAMS_MAX} entries")
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key_re.fullmatch(key):
            raise Refused(f"{what}: {key!r} is not a name corral passes on")
        if not isinstance(val, str) or not _VALUE_RE.fullmatch(val):
            raise Refused(f"{what}.{key}: the value must be printable ASCII (at most 1024)")
        out[key] = val
    return out


def script_request(body: object, *, script: str) -> ScriptRun:
    """The JSON request of os-create / os-rename, checked whole, into the API's
    environment (the definition's own part is added once it is found)."""
    req = check_object(body, what=f"os-{script}", required=_OS_REQUIRED, optional=_OS_OPTIONAL)
    os_name = req["os"]
    if not isinstance(os_name, str):
        raise Refused(f"os-{script}: os must be a string")
    provider, plus, variant = os_name.partition("+")
    if not _PART_RE.fullmatch(provider) or (plus and not _PART_RE.fullmatch(variant)):
        raise Refused(f"os-{script}: os {os_name[:80]!r} is not NAME or NAME+VARIANT")
    instance = check_name(req["instance"], what="instance")
    old_name = ""
    if script == "rename":
        old_name = check_name(req.get("old_name"), what="old_name")
    elif "old_name" in req:
        raise Refused("os-create: old_name is for os-rename only")
    primary = check_name(req["primary"], what="primary")
    secondaries = req.get("secondaries", [])
    if not isinstance(secondaries, list) or len(secondaries) > 4:
        raise Refused("secondaries must be a list of node names")
    secondaries = [check_name(n, what="secondary") for n in secondaries]
    env: dict[str, str] = {
        "INSTANCE_NAME": instance,
        "INSTANCE_OS": os_name,
        "INSTANCE_PRIMARY_NODE": primary,
        "INSTANCE_SECONDARY_NODES": " ".join(secondaries),
        "HYPERVISOR": "kvm",
        "DEBUG_LEVEL": "0",
    }
    env.update(_disk_env(req["disks"]))
    nics = req.get("nics", [])
    env.update(_nic_env(nics))
    be = _text_map(req.get("be", {}), what="be", key_re=_HV_KEY_RE)
    for key, low, high in (("maxmem", 1, MEMORY_MIB_MAX), ("minmem", 1, MEMORY_MIB_MAX),
                           ("vcpus", 1, VCPUS_MAX)):  # fmt: skip
        if key in be:
            check_number(be[key], what=f"be.{key}", low=low, high=high)
    hv = _text_map(req.get("hv", {}), what="hv", key_re=_HV_KEY_RE)
    # Ganeti passes beparams and hvparams under their own (lowercase) names.
    env.update({f"INSTANCE_BE_{k}": v for k, v in sorted(be.items())})
    env.update({f"INSTANCE_HV_{k}": v for k, v in sorted(hv.items())})
    if "nic_type" in hv:
        env.update({f"NIC_{i}_FRONTEND_TYPE": hv["nic_type"] for i in range(len(nics))})
    params = _text_map(req.get("params", {}), what="params", key_re=_PARAM_RE)
    reinstall = check_flag(req.get("reinstall", False), what="reinstall")
    return ScriptRun(
        script=script,
        os_name=os_name,
        provider=provider,
        variant=variant,
        instance=instance,
        old_name=old_name,
        env=env,
        params=params,
        reinstall=reinstall,
    )


def _disk_env(disks: object) -> dict[str, str]:
    """DISK_COUNT and DISK_<n>_*: each disk a /dev/drbdN, read-write, a block device."""
    if not isinstance(disks, list) or not 1 <= len(disks) <= DISKS_MAX:
        raise Refused(f"disks must be a list of 1 to {DISKS_MAX}")
    env: dict[str, str] = {}
    seen: set[str] = set()
    for i, disk in enumerate(disks):
        d = check_object(
            disk, what=f"disks[{i}]", required=frozenset({"path", "size_mib"}), optional=frozenset()
        )
        path = d["path"]
        if not isinstance(path, str) or not _DEVICE_RE.fullmatch(path) or path in seen:
            raise Refused(f"disks[{i}].path {str(path)[:40]!r} is not one /dev/drbdN")
        seen.add(path)
        size = check_number(d["size_mib"], what=f"disks[{i}].size_mib", low=1, high=SIZE_MIB_MAX)
        env[f"DISK_{i}_PATH"] = path
        env[f"DISK_{i}_ACCESS"] = "rw"
        env[f"DISK_{i}_SIZE"] = str(size)
        env[f"DISK_{i}_BACKEND_TYPE"] = "block"
    env["DISK_COUNT"] = str(len(disks))
    return env


def _nic_env(nics: object) -> dict[str, str]:
    """NIC_COUNT and NIC_<n>_*: MAC, mode, link (and bridge when bridged), IP."""
    if not isinstance(nics, list) or len(nics) > NICS_MAX:
        raise Refused(f"nics must be a list of at most {NICS_MAX}")
    env: dict[str, str] = {}
    for i, nic in enumerate(nics):
        n = check_object(
            nic, what=f"nics[{i}]", required=frozenset({"mac", "mode", "link"}),
            optional=frozenset({"ip"}),
        )  # fmt: skip
        mac, mode, link = n["mac"], n["mode"], n["link"]
        if not isinstance(mac, str) or not MAC_RE.fullmatch(mac):
            raise Refused(f"nics[{i}].mac {str(mac)[:20]!r} is not a MAC address")
        if mode not in ("bridged", "routed", "openvswitch"):
            raise Refused(f"nics[{i}].mode {str(mode)[:20]!r} is not a NIC mode")
        if not isinstance(link, str) or not LINK_RE.fullmatch(link):
            raise Refused(f"nics[{i}].link {str(link)[:20]!r} is not an interface name")
        env[f"NIC_{i}_MAC"] = mac
        env[f"NIC_{i}_MODE"] = mode
        env[f"NIC_{i}_LINK"] = link
        if mode == "bridged":
            env[f"NIC_{i}_BRIDGE"] = link
        if n.get("ip"):
            env[f"NIC_{i}_IP"] = check_address(n["ip"], what=f"nics[{i}].ip")
    env["NIC_COUNT"] = str(len(nics))
    return env


def _lines(data: bytes) -> list[str]:
    """A list file's entries: blank lines and '#' comments skipped."""
    text = data.decode(errors="replace")
    return [s.strip() for s in text.splitlines() if s.strip() and not s.strip().startswith("#")]


class Unusable(Exception):
    def __init__(self, rc: int, message: str) -> None:
        super().__init__(message)
        self.rc = rc


def find_definition(env: NodeEnv, provider: str) -> Definition:
    """The first directory named `provider` in OS_SEARCH_PATH, checked as Ganeti
    checks one (backend._TryOSFromDisk); Unusable says why not."""
    for base in OS_SEARCH_PATH:
        path = f"{base}/{provider}"
        listed = env.glob(f"{path}/*")
        if listed:
            break
    else:
        raise Unusable(
            EX_NOINPUT,
            f"no OS definition {provider!r} on this node (searched {', '.join(OS_SEARCH_PATH)})",
        )
    files = frozenset(p.rsplit("/", 1)[1] for p in listed)
    raw = env.read_file(f"{path}/ganeti_api_version")
    if raw is None:
        raise Unusable(EX_DATAERR, f"{path}/ganeti_api_version is missing")
    try:
        versions = [int(v) for v in _lines(raw)]
    except ValueError:
        raise Unusable(EX_DATAERR, f"{path}/ganeti_api_version does not hold numbers") from None
    shared = [v for v in OS_API_VERSIONS if v in versions]
    if not shared:
        raise Unusable(
            EX_DATAERR,
            f"{path}: API version mismatch: found {versions}, want one of {list(OS_API_VERSIONS)}",
        )
    api = shared[0]
    required = {"create", "export", "import", "rename"}
    if api >= 20:
        required |= {"verify", "parameters.list"}
    missing = sorted(required - files)
    if missing:
        raise Unusable(EX_DATAERR, f"{path}: required file {missing[0]!r} is missing")
    variants: tuple[str, ...] = ()
    if api >= 15 and "variants.list" in files:
        variants = tuple(_lines(env.read_file(f"{path}/variants.list") or b""))
    parameters: tuple[str, ...] = ()
    if api >= 20:
        parameters = tuple(
            line.split(None, 1)[0]
            for line in _lines(env.read_file(f"{path}/parameters.list") or b"")
        )
    return Definition(
        name=provider,
        path=path,
        api_version=api,
        variants=variants,
        parameters=parameters,
        files=files,
    )


def _variant(run: ScriptRun, found: Definition) -> str:
    """The variant the script gets (Ganeti's _CheckOSVariant and OSCoreEnv)."""
    if found.api_version < 15 or not found.variants:
        if run.variant:
            raise Unusable(EX_DATAERR, f"OS definition {found.name} does not support variants")
        return ""
    if not run.variant:
        raise Unusable(
            EX_DATAERR,
            f"OS definition {found.name} needs a variant: one of {', '.join(found.variants)} "
            f"(os: {found.name}+{found.variants[0]})",
        )
    if run.variant not in found.variants:
        raise Unusable(
            EX_DATAERR,
            f"OS definition {found.name} has no variant {run.variant!r}; its variants.list "
            f"holds: {', '.join(found.variants)}",
        )
    return run.variant


def environment(run: ScriptRun, found: Definition) -> dict[str, str]:
    """The whole environment of the script (Ganeti's OSEnvironment): nothing of the
    helper's own."""
    env = {
        "OS_API_VERSION": str(found.api_version),
        "OS_NAME": found.name,
        "OS_VARIANT": _variant(run, found),
        "PATH": SCRIPT_PATH,
        **run.env,
    }
    if found.api_version >= 20:
        unknown = sorted(set(run.params) - set(found.parameters))
        if unknown:
            raise Unusable(
                EX_DATAERR,
                f"OS definition {found.name} has no parameter {unknown[0]!r} (its "
                f"parameters.list: {', '.join(found.parameters) or 'none'})",
            )
        env.update({f"OSP_{k.upper().replace('-', '_')}": v for k, v in run.params.items()})
    elif run.params:
        raise Unusable(
            EX_DATAERR, f"OS definition {found.name} (API {found.api_version}) takes no parameters"
        )
    if run.script == "create" and run.reinstall:
        env["INSTANCE_REINSTALL"] = "1"
    if run.script == "rename":
        env["OLD_INSTANCE_NAME"] = run.old_name
    return env


def log_path(run: ScriptRun) -> str:
    """Ganeti's log name: add-OS-INSTANCE-TIME.log, rename-OS-OLD-NEW-TIME.log."""
    kind = "add" if run.script == "create" else "rename"
    who = f"{run.old_name}-{run.instance}" if run.old_name else run.instance
    return f"{LOG_DIR}/{kind}-{run.os_name}-{who}-{time.strftime('%Y-%m-%d_%H_%M_%S')}.log"


def run_definition(env: NodeEnv, run: ScriptRun) -> Outcome:
    try:
        found = find_definition(env, run.provider)
        script_env = environment(run, found)
    except Unusable as exc:
        return Outcome(exc.rc, b"", f"os: {exc}; nothing was run\n".encode())
    if run.params and found.api_version >= 20:
        checked = env.run_script(
            [f"{found.path}/verify", "parameters"],
            env=script_env,
            cwd=found.path,
            log=log_path(run).replace(f"{LOG_DIR}/", f"{LOG_DIR}/verify-", 1),
            timeout_s=300.0,
        )
        if checked.rc != 0:
            return Outcome(
                EX_DATAERR,
                b"",
                f"os: {found.path}/verify refused the parameters (exit {checked.rc}); "
                f"nothing was run:\n{checked.stderr.decode(errors='replace')}".encode(),
            )
    log = log_path(run)
    done = env.run_script(
        [f"{found.path}/{run.script}"],
        env=script_env,
        cwd=found.path,
        log=log,
        timeout_s=SCRIPT_TIMEOUT_S,
    )
    if done.rc != 0:
        # The orchestrator keeps the first few hundred characters of stderr: the
        # log's last lines first (at most TAIL_SAID of them), then where the rest is.
        tail = done.stderr.decode(errors="replace").strip()[-TAIL_SAID:]
        return Outcome(
            EX_SCRIPT_FAILED,
            b"",
            f"os: {run.os_name} {run.script} exited {done.rc}: ...{tail} (log: {log})\n".encode(),
        )
    return Outcome(
        0, f"os: {found.path}/{run.script} ran for {run.instance}; log: {log}\n".encode()
    )


def os_script(script: str) -> Callable[[list[str], list[str], bytes], Callable[[NodeEnv], Outcome]]:
    def build(args: list[str], options: list[str], stdin: bytes) -> Callable[[NodeEnv], Outcome]:
        body: Any = parse_json_body(stdin, what=f"os-{script}")
        run = script_request(body, script=script)
        return lambda env: run_definition(env, run)

    return build
