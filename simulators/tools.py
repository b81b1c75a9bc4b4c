"""The node tools a simulated host answers, with the real tools' argv, output
formats, error texts and exit codes: host facts, LVM (`--reportformat json`),
drbdadm/drbdsetup as DRBD 9 or as the distribution kernels' 8.4 (per host:
`status --json` or only events2, error texts naming the resource or the minor),
qemu-system-x86_64 (-daemonize, -pidfile, -qmp), pgrep/kill, and the few file
commands corral uses (tee, cat, head, grep, rm, mkdir, echo, test).

Operates on `simulators.fabric` state; no I/O. Imports nothing from corral's own
packages.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from simulators.drbd_model import Copy, DrbdError, ResourceConfig, parse_resource_file
from simulators.fabric import Fabric, Host, Vm, Volume
from simulators.hotplug_qmp import devices_from_argv


@dataclass
class Result:
    rc: int = 0
    out: str = ""
    err: str = ""


Tool = Callable[[Fabric, Host, list[str], bytes], Result]
TOOLS: dict[str, Tool] = {}


def tool(*names: str) -> Callable[[Tool], Tool]:
    def register(fn: Tool) -> Tool:
        for name in names:
            TOOLS[name] = fn
        return fn

    return register


# ----------------------------------------------------------------------- facts & files


@tool("nproc")
def _nproc(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    return Result(out=f"{h.cpus}\n")


@tool("hostname")
def _hostname(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    return Result(out=f"{h.name}\n")


@tool("echo")
def _echo(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    return Result(out=" ".join(argv[1:]) + "\n")


@tool("true")
def _true(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    return Result()


def _meminfo(h: Host) -> str:
    total = h.memory_mib * 1024
    free = max(0, (h.memory_mib - h.memory_used_mib) * 1024)
    return (
        f"MemTotal:       {total} kB\n"
        f"MemFree:        {free} kB\n"
        f"MemAvailable:   {free} kB\n"
        "Buffers:               0 kB\n"
        "Cached:                0 kB\n"
    )


def read_host_file(f: Fabric, h: Host, path: str) -> bytes | None:
    """A file of the host as root reads it: /proc's few files corral reads (a VM's
    /proc/PID/cmdline with its NULs), else the host's files; None if absent."""
    if path == "/proc/meminfo":
        return _meminfo(h).encode()
    if path == "/proc/sys/kernel/random/boot_id":
        return (h.boot_id + "\n").encode()
    if path == "/proc/drbd":
        return _proc_drbd(f, h).encode()
    m = re.fullmatch(r"/proc/(\d+)/cmdline", path)
    if m:
        vm = next((v for v in h.vms.values() if v.pid == int(m.group(1))), None)
        return None if vm is None else ("\0".join(vm.argv) + "\0").encode()
    return h.files.get(path)


@tool("cat")
def _cat(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    out = []
    for path in argv[1:]:
        data = read_host_file(f, h, path)
        if data is None:
            return Result(rc=1, err=f"cat: {path}: No such file or directory\n")
        out.append(data.decode(errors="replace"))
    return Result(out="".join(out))


@tool("head")
def _head(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    count = int(argv[argv.index("-n") + 1]) if "-n" in argv else 10
    paths = [a for i, a in enumerate(argv[1:], 1) if not a.startswith("-") and argv[i - 1] != "-n"]
    text = _cat(f, h, ["cat", *paths], stdin) if paths else Result(out=stdin.decode())
    if text.rc != 0:
        return Result(rc=1, err=text.err.replace("cat:", "head: cannot open", 1))
    return Result(out="".join(text.out.splitlines(keepends=True)[:count]))


@tool("grep")
def _grep(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    """`grep [-H] [-E] PATTERN FILE...`; a FILE with `*` stands for the glob bash
    would have expanded, passed through as bash does when nothing matches."""
    args = [a for a in argv[1:] if a not in ("-H", "-E")]
    if not args:
        return Result(rc=2, err="Usage: grep [OPTION]... PATTERNS [FILE]...\n")
    pattern = re.compile(args[0].replace("[[:space:]]", r"\s"))
    paths: list[str] = []
    for arg in args[1:]:
        paths += sorted(p for p in h.files if fnmatch.fnmatchcase(p, arg)) if "*" in arg else []
        paths += (
            [arg] if "*" not in arg or not any(fnmatch.fnmatchcase(p, arg) for p in h.files) else []
        )
    out: list[str] = []
    err: list[str] = []
    for path in paths:
        if path not in h.files:
            err.append(f"grep: {path}: No such file or directory\n")
            continue
        for line in h.files[path].decode().splitlines():
            if pattern.search(line):
                out.append(f"{path}:{line}\n" if "-H" in argv or len(paths) > 1 else line + "\n")
    rc = 2 if err else (0 if out else 1)
    return Result(rc=rc, out="".join(out), err="".join(err))


@tool("tee")
def _tee(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    paths = [a for a in argv[1:] if not a.startswith("-")]
    for path in paths:
        if not path.startswith(("/etc/drbd.d/", "/run/corral/", "/var/lib/corral/")):
            return Result(rc=1, err=f"tee: {path}: Permission denied\n")
        h.files[path] = stdin
    return Result(out=stdin.decode(errors="replace"))


@tool("rm")
def _rm(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    force = "-f" in argv
    for path in [a for a in argv[1:] if not a.startswith("-")]:
        if path in h.files:
            del h.files[path]
        elif not force:
            return Result(rc=1, err=f"rm: cannot remove '{path}': No such file or directory\n")
    return Result()


@tool("mkdir")
def _mkdir(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    return Result()


@tool("test")
def _test(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    if len(argv) == 3 and argv[1] in ("-e", "-f"):
        return Result(rc=0 if argv[2] in h.files else 1)
    return Result(rc=2, err="test: unsupported expression\n")


# ----------------------------------------------------------------------- LVM


def _lvm_json(kind: str, rows: list[dict[str, str]]) -> str:
    # json.dumps({"report": [{kind: rows}]}, indent=2), item by item (`_json_list`)
    inner = _json_list(rows, level=3)
    return f'{{\n  "report": [\n    {{\n      {json.dumps(kind)}: {inner}\n    }}\n  ]\n}}\n'


# What `json.dumps(item, indent=2)` prints for each item a tool lists, keyed by
# its compact JSON: with indent, json encodes in Python, not C, and the probes of
# 200 hosts a second list the same LVs and resources over and over.
_INDENTED: dict[str, str] = {}


def _json_list(items: Sequence[Mapping[str, object]], *, level: int) -> str:
    """`json.dumps(items, indent=2)` as printed `level` deep in a document."""
    if not items:
        return "[]"
    pad = "\n" + "  " * (level + 1)
    out = []
    for item in items:
        key = json.dumps(item)
        text = _INDENTED.get(key)
        if text is None:
            if len(_INDENTED) >= 100_000:
                _INDENTED.clear()
            text = _INDENTED[key] = json.dumps(item, indent=2)
        out.append(text.replace("\n", pad))
    return "[" + pad + ("," + pad).join(out) + "\n" + "  " * level + "]"


def _fmt_m(value: int, nosuffix: bool) -> str:
    return f"{value:.2f}" + ("" if nosuffix else "m")


@tool("vgs")
def _vgs(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    nosuffix = "--nosuffix" in argv
    row = {
        "vg_name": h.vg_name,
        "vg_size": _fmt_m(h.vg_size_mib, nosuffix),
        "vg_free": _fmt_m(h.vg_free_mib, nosuffix),
    }
    return Result(out=_lvm_json("vg", [row]))


@tool("lvs")
def _lvs(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    nosuffix = "--nosuffix" in argv
    rows = [
        {
            "lv_name": v.name,
            "vg_name": v.vg,
            "lv_size": _fmt_m(v.size_mib, nosuffix),
            "lv_attr": "-wi-a-----",
        }
        for v in sorted(h.volumes.values(), key=lambda v: v.name)
    ]
    return Result(out=_lvm_json("lv", rows))


def _size_arg(value: str) -> int:
    m = re.fullmatch(r"\+?(\d+)([mMgG]?)", value)
    if not m:
        raise ValueError(value)
    n = int(m.group(1))
    return n * 1024 if m.group(2) in ("g", "G") else n


@tool("lvcreate")
def _lvcreate(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    size = name = vg = None
    args = argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-L", "--size"):
            size = args[i + 1]
            i += 2
        elif a in ("-n", "--name"):
            name = args[i + 1]
            i += 2
        elif a.startswith("-"):
            i += 1
        else:
            vg = a
            i += 1
    if size is None or name is None or vg is None:
        return Result(rc=3, err="  Please specify either size or extents but not both.\n")
    try:
        mib = _size_arg(size)
    except ValueError:
        return Result(rc=3, err=f"  Invalid argument for --size: {size}\n")
    if vg != h.vg_name:
        return Result(rc=5, err=f'  Volume group "{vg}" not found\n')
    if name in h.volumes:
        return Result(
            rc=5, err=f'  Logical Volume "{name}" already exists in volume group "{vg}"\n'
        )
    if mib > h.vg_free_mib:
        extents = mib // 4
        free = h.vg_free_mib // 4
        return Result(
            rc=5,
            err=f'  Volume group "{vg}" has insufficient free space ({free} extents): '
            f"{extents} required.\n",
        )
    h.volumes[name] = Volume(vg=vg, name=name, size_mib=mib)
    return Result(out=f'  Logical volume "{name}" created.\n')


def _lv_arg(h: Host, spec: str) -> Volume | None:
    vg, _, name = spec.removeprefix("/dev/").rpartition("/")
    vol = h.volumes.get(name)
    return vol if vol is not None and (not vg or vg == vol.vg) else None


@tool("lvremove")
def _lvremove(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    targets = [a for a in argv[1:] if not a.startswith("-")]
    for spec in targets:
        vol = _lv_arg(h, spec)
        if vol is None:
            return Result(rc=5, err=f'  Failed to find logical volume "{spec}"\n')
        for copy in h.copies.values():
            if copy.up and any(
                hs.disk.endswith("/" + vol.name)
                for n, hs in copy.config.hosts.items()
                if n == h.name
            ):
                return Result(rc=5, err=f"  Logical volume {vol.vg}/{vol.name} in use.\n")
        del h.volumes[vol.name]
        for res in [  # their DRBD metadata lived on it
            r
            for r, c in h.copies.items()
            if h.name in c.config.hosts and _lv_arg(h, c.config.hosts[h.name].disk) is None
        ]:
            del h.copies[res]
    return Result(
        out="".join(
            f'  Logical volume "{t.rpartition("/")[2]}" successfully removed.\n' for t in targets
        )
    )


@tool("lvrename")
def _lvrename(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    """`lvrename VG OLD NEW` as LVM 2.03 answers it. DRBD's internal metadata lives
    on the LV, so a (down) copy backed by OLD moves with it, keyed by the new name
    (corral names a resource after its LV)."""
    words = [a for a in argv[1:] if not a.startswith("-")]
    if len(words) != 3:
        return Result(rc=3, err="  Old and new logical volume names required\n")
    vg, old, new = words
    vol = h.volumes.get(old)
    if vol is None or vol.vg != vg:
        return Result(
            rc=5, err=f'  Existing logical volume "{old}" not found in volume group "{vg}"\n'
        )
    if new in h.volumes:
        return Result(rc=5, err=f'  Logical Volume "{new}" already exists in volume group "{vg}"\n')
    backed = [
        r
        for r, c in h.copies.items()
        if h.name in c.config.hosts and _lv_arg(h, c.config.hosts[h.name].disk) is vol
    ]
    if any(h.copies[r].up for r in backed):
        return Result(rc=5, err=f"  Logical volume {vg}/{old} in use.\n")
    del h.volumes[old]
    vol.name = new
    h.volumes[new] = vol
    for r in backed:
        moved = h.copies.pop(r)
        moved.name = new
        h.copies[new] = moved
    return Result(out=f'  Renamed "{old}" to "{new}" in volume group "{vg}"\n')


@tool("lvextend", "lvresize")
def _lvextend(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    size = None
    target = None
    args = argv[1:]
    i = 0
    while i < len(args):
        if args[i] in ("-L", "--size"):
            size = args[i + 1]
            i += 2
        elif args[i].startswith("-"):
            i += 1
        else:
            target = args[i]
            i += 1
    vol = _lv_arg(h, target or "")
    if vol is None or size is None:
        return Result(rc=5, err=f'  Failed to find logical volume "{target}"\n')
    new = vol.size_mib + _size_arg(size) if size.startswith("+") else _size_arg(size)
    if new - vol.size_mib > h.vg_free_mib:
        return Result(rc=5, err=f"  Insufficient free space: {new - vol.size_mib} MiB required\n")
    if new < vol.size_mib:
        return Result(rc=5, err="  New size given is smaller than current size\n")
    vol.size_mib = new
    return Result(out=f"  Logical volume {vol.vg}/{vol.name} successfully resized.\n")


# ----------------------------------------------------------------------- DRBD


def _load_config(h: Host, res: str) -> tuple[Copy | None, Result | None]:
    path = f"/etc/drbd.d/{res}.res"
    if path not in h.files:
        return None, Result(rc=10, err=f"'{res}' not defined in your config (for this host).\n")
    try:
        config = parse_resource_file(h.files[path].decode(), major=h.drbd_major, path=path)
    except DrbdError as exc:
        return None, Result(rc=10, err=f"{exc}\n")
    if h.name not in config.hosts:
        return None, Result(rc=10, err=f"'{res}' not defined in your config (for this host).\n")
    copy = h.copies.get(res)
    if copy is not None:
        copy.config = config
    return copy, None


def _config(h: Host, res: str) -> ResourceConfig:
    return parse_resource_file(h.files[f"/etc/drbd.d/{res}.res"].decode(), major=h.drbd_major)


def _backing(h: Host, res: str) -> Volume | None:
    copy_cfg = _config(h, res)
    disk = copy_cfg.hosts[h.name].disk
    return _lv_arg(h, disk)


def _state_error(h: Host, res: str, verb: str, code: int, text: str) -> Result:
    """DRBD 9 names the resource; 8.4 (drbdsetup-84) names the minor."""
    if h.drbd_major < 9:
        minor = _config(h, res).hosts[h.name].minor
        return Result(
            rc=11,
            err=f"{minor}: State change failed: ({code}) {text}\n"
            f"Command 'drbdsetup-84 {verb} {minor}' terminated with exit code 11\n",
        )
    return Result(
        rc=11,
        err=f"{res}: State change failed: ({code}) {text}\n"
        f"Command 'drbdsetup {verb} {res}' terminated with exit code 11\n",
    )


def _two_primaries_refused(h: Host, cfg: ResourceConfig) -> Result:
    me = cfg.hosts[h.name]
    peer = next(x for n, x in cfg.hosts.items() if n != h.name)
    tool = (
        "drbdsetup-84 net-options"
        if h.drbd_major < 9
        else f"drbdsetup net-options {cfg.name} {peer.node_id}"
    )
    where = (
        f" ipv4:{me.address}:{me.port} ipv4:{peer.address}:{peer.port}" if h.drbd_major < 9 else ""
    )
    return Result(
        rc=1,
        err="??: Failure: (164) Can not clear allow_two_primaries as long as\n"
        "there a primaries on both sides\n"
        f"Command '{tool}{where} --set-defaults --protocol=C --allow-two-primaries=no "
        "--after-sb-0pri=discard-zero-changes --after-sb-1pri=disconnect "
        "--after-sb-2pri=disconnect' terminated with exit code 10\n",
    )


@tool("drbdadm")
def _drbdadm(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    args = [a for a in argv[1:]]
    force = "--force" in args
    discard = "--discard-my-data" in args
    words = [a for a in args if not a.startswith("--")]
    if len(words) != 2:
        return Result(rc=20, err="USAGE: drbdadm COMMAND [OPTION...] {all|RESOURCE...}\n")
    cmd, res = words
    f.tick(only={res})
    before = h.copies[res].config if res in h.copies else None
    copy, error = _load_config(h, res)
    if error is not None:
        return error
    cfg = _config(h, res)
    minor = cfg.hosts[h.name].minor
    if cmd == "create-md":
        vol = _backing(h, res)
        if vol is None:
            return Result(
                rc=10, err=f"open({cfg.hosts[h.name].disk}) failed: No such file or directory\n"
            )
        if copy is not None and copy.up:
            return Result(rc=20, err=f"Device '{minor}' is configured!\n")
        h.copies[res] = Copy(name=res, config=cfg, size_mib=vol.size_mib)
        if h.drbd_major < 9:
            return Result(
                out="initializing bitmap (8 KB) to all zero\ninitializing activity log\n"
                "Writing meta data...\nNew drbd meta data block successfully created.\n"
            )
        return Result(
            out="initializing activity log\ninitializing bitmap (32 KB) to all zero\n"
            "Writing meta data...\nNew drbd meta data block successfully created.\n"
        )
    if copy is None and cmd == "down":
        return Result(rc=10, err=f"{res}: No such resource\n")
    if copy is None:
        vol = _backing(h, res)
        if vol is None:
            return Result(
                rc=10, err=f"open({cfg.hosts[h.name].disk}) failed: No such file or directory\n"
            )
        return Result(
            rc=255,
            err=f"No valid meta data found\nCommand 'drbdmeta {minor} "
            f"v0{h.drbd_major} {cfg.hosts[h.name].disk} "
            "internal apply-al' terminated with exit code 255\n",
        )
    if cmd in ("up", "adjust"):
        if (
            cmd == "adjust"
            and copy.up
            and before is not None
            and before.allow_two_primaries
            and not cfg.allow_two_primaries
            and copy.role == "Primary"
            and (link := f.link(h.name, res)) is not None
            and link.connection == "Connected"
            and link.peer_role == "Primary"
        ):
            copy.config = before  # the kernel keeps the old net options
            return _two_primaries_refused(h, cfg)
        if res in h.failed_disks:
            copy.disk = "Failed"
        copy.up = True
        if cmd == "adjust":
            copy.standalone = False
        vol = _backing(h, res)
        if vol is not None:
            copy.size_mib = vol.size_mib
        f.tick(only={res})
        return Result()
    if not copy.up:
        return Result(rc=10, err=f"{res}: No such resource\n")
    if cmd == "down":
        if copy.role == "Primary" and h.holder_of(minor):
            return _state_error(h, res, "down", -12, "Device is held open by someone")
        copy.up = False
        copy.role = "Secondary"
        f.tick(only={res})
        return Result()
    if cmd == "primary":
        peer = f.peer_copy(h.name, res)
        link = f.link(h.name, res)
        if (
            peer is not None
            and link is not None
            and link.connection == "Connected"
            and peer[1].role == "Primary"
            and not copy.config.allow_two_primaries
        ):
            return _state_error(h, res, "primary", -1, "Multiple primaries not allowed by config")
        if copy.disk != "UpToDate":
            if not force or copy.disk in ("Failed", "Diskless"):
                return _state_error(h, res, "primary", -2, "Need access to UpToDate data")
            copy.disk = "UpToDate"
            copy.history.append(copy.current)
            copy.current = _new_gen()
        if copy.role != "Primary" and (link is None or link.connection != "Connected"):
            copy.history.append(copy.current)
            copy.current = _new_gen()
        copy.role = "Primary"
        f.tick(only={res})
        return Result()
    if cmd == "secondary":
        if h.holder_of(minor):
            return _state_error(h, res, "secondary", -12, "Device is held open by someone")
        copy.role = "Secondary"
        return Result()
    if cmd == "disconnect":
        copy.standalone = True
        f.tick(only={res})
        return Result()
    if cmd == "connect":
        copy.standalone = False
        copy.discard_my_data = discard
        f.tick(only={res})
        return Result()
    if cmd == "outdate":
        if copy.role == "Primary":
            return _state_error(h, res, "outdate", -2, "Refusing to be Outdated while Primary")
        copy.disk = "Outdated"
        return Result()
    if cmd == "resize":
        vol = _backing(h, res)
        if vol is not None:
            copy.size_mib = vol.size_mib
        return Result()
    return Result(rc=20, err=f"Unknown command '{cmd}'\n")


def _new_gen() -> int:
    from simulators.drbd_model import new_uuid

    return new_uuid()


DRBDSETUP_84_USAGE = (
    "\nUSAGE: drbdsetup command device arguments options\n\n"
    "Device is usually /dev/drbdX or /dev/drbd/X.\n\nCommands are:\n"
)


def _proc_drbd(f: Fabric, h: Host) -> str:
    if h.drbd_major >= 9:
        return (
            f"version: {h.drbd_version} (api:2/proto:86-122)\n"
            "GIT-hash: 0000000000000000000000000000000000000000 build by corral-sim\n"
            f"Transports (api:18): tcp ({h.drbd_version})\n"
        )
    lines = [
        f"version: {h.drbd_version} (api:1/proto:86-101)\n",
        "srcversion: F73C670A7EC572DB9CF3E5B \n",
    ]
    for res, copy in sorted(h.copies.items(), key=lambda kv: kv[1].config.hosts[h.name].minor):
        if not copy.up:
            continue
        link = f.link(h.name, res)
        assert link is not None
        cs = {"Connecting": "WFConnection", "Connected": link.replication}.get(
            link.connection, link.connection
        )
        cs = "Connected" if cs == "Established" else cs
        lines.append(
            f" {copy.config.hosts[h.name].minor}: cs:{cs} ro:{copy.role}/{link.peer_role} "
            f"ds:{copy.disk}/{link.peer_disk} C r-----\n"
            "    ns:0 nr:0 dw:0 dr:0 al:8 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n"
        )
    return "".join(lines)


def _events2(f: Fabric, h: Host, names: list[str], statistics: bool) -> str:
    """`drbdsetup events2 --now [--statistics]` as 8.4 prints it (captured), and as
    DRBD 9 does with its connections named after the peer host."""
    lines = []
    for res, copy in sorted(h.copies.items()):
        if not copy.up or (names and res not in names):
            continue
        me = copy.config.hosts[h.name]
        peer_name, peer = next((n, x) for n, x in copy.config.hosts.items() if n != h.name)
        link = f.link(h.name, res)
        assert link is not None
        conn = (
            "peer-node-id:0 conn-name:peer"
            if h.drbd_major < 9
            else (f"peer-node-id:{peer.node_id} conn-name:{peer_name}")
        )
        size = copy.size_mib * 1024
        oos = 0 if link.percent >= 100 else int(size * (100 - link.percent) / 100)
        lines.append(
            f"exists resource name:{res} role:{copy.role} suspended:no"
            + (" write-ordering:flush" if statistics else "")
        )
        lines.append(
            f"exists connection name:{res} {conn} connection:{link.connection} "
            f"role:{link.peer_role}" + (" congested:no" if statistics else "")
        )
        lines.append(
            f"exists device name:{res} volume:0 minor:{me.minor} disk:{copy.disk}"
            + (
                f" size:{size} read:0 written:0 al-writes:0 bm-writes:0 upper-pending:0"
                " lower-pending:0 al-suspended:no blocked:no"
                if statistics
                else ""
            )
        )
        lines.append(
            f"exists peer-device name:{res} {conn} volume:0 replication:{link.replication} "
            f"peer-disk:{link.peer_disk} resync-suspended:no"
            + (f" received:0 sent:0 out-of-sync:{oos} pending:0 unacked:0" if statistics else "")
        )
    lines.append("exists -")
    return "\n".join(lines) + "\n"


@tool("drbdsetup")
def _drbdsetup(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    f.tick_host(h.name)
    names = [a for a in argv[2:] if not a.startswith("--")]
    if len(argv) >= 2 and argv[1] == "events2" and "--now" in argv:
        return Result(out=_events2(f, h, names, "--statistics" in argv))
    if len(argv) < 2 or argv[1] != "status" or "--json" not in argv:
        return Result(
            rc=20, err="drbdsetup: only 'status --json' and 'events2 --now' are simulated\n"
        )
    if h.drbd_major < 9:
        # as 8.4's drbdsetup does: the complaint on stderr, its usage on stdout
        return Result(rc=20, out=DRBDSETUP_84_USAGE, err="status: unrecognized option '--json'\n")
    out = []
    for res, copy in sorted(h.copies.items()):
        if not copy.up or (names and res not in names):
            continue
        me = copy.config.hosts[h.name]
        connections = []
        for peer_name, section in sorted(copy.config.hosts.items()):
            if peer_name == h.name:
                continue
            link = f.link(h.name, res)
            assert link is not None
            oos = (
                0 if link.percent >= 100 else int(copy.size_mib * 1024 * (100 - link.percent) / 100)
            )
            connections.append(
                {
                    "peer-node-id": section.node_id,
                    "name": peer_name,
                    "connection-state": link.connection,
                    "congested": False,
                    "peer-role": link.peer_role,
                    "ap-in-flight": 0,
                    "rs-in-flight": 0,
                    "peer_devices": [
                        {
                            "volume": 0,
                            "replication-state": link.replication,
                            "peer-disk-state": link.peer_disk,
                            "peer-client": False,
                            "resync-suspended": "no",
                            "received": 0,
                            "sent": 0,
                            "out-of-sync": oos,
                            "pending": 0,
                            "unacked": 0,
                            "has-sync-details": link.replication.startswith("Sync"),
                            "has-online-verify-details": False,
                            "percent-in-sync": link.percent,
                        }
                    ],
                }
            )
        out.append(
            {
                "name": res,
                "node-id": me.node_id,
                "role": copy.role,
                "suspended": False,
                "write-ordering": "flush",
                "devices": [
                    {
                        "volume": 0,
                        "minor": me.minor,
                        "disk-state": copy.disk,
                        "client": False,
                        "quorum": True,
                        "size": copy.size_mib * 1024,
                        "read": 0,
                        "written": 0,
                        "al-writes": 0,
                        "bm-writes": 0,
                        "upper-pending": 0,
                        "lower-pending": 0,
                    }
                ],
                "connections": connections,
            }
        )
    return Result(out=_json_list(out, level=0) + "\n")


# ----------------------------------------------------------------------- qemu & processes


def _opt(argv: list[str], name: str) -> str | None:
    if name in argv:
        i = argv.index(name)
        if i + 1 < len(argv):
            return argv[i + 1]
    return None


def _memory(value: str) -> int:
    m = re.fullmatch(r"(?:size=)?(\d+)([MG]?)", value)
    if not m:
        raise ValueError(value)
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


@tool("qemu-system-x86_64")
def _qemu(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    name = _opt(argv, "-name")
    pidfile = _opt(argv, "-pidfile")
    qmp = _opt(argv, "-qmp")
    if not name or not pidfile or not qmp or "-daemonize" not in argv:
        return Result(
            rc=1,
            err="qemu-system-x86_64: corral's simulator needs -name, -daemonize, -pidfile and -qmp\n",
        )
    name = name.split(",")[0].removeprefix("guest=")
    try:
        memory = _memory(_opt(argv, "-m") or "128")
        vcpus = int((_opt(argv, "-smp") or "1").split(",")[0])
    except ValueError:
        return Result(rc=1, err="qemu-system-x86_64: invalid -m or -smp\n")
    drives = []
    for i, a in enumerate(argv):
        if a == "-drive" and i + 1 < len(argv):
            for part in argv[i + 1].split(","):
                if part.startswith("file="):
                    drives.append(part[5:])
    f.tick_host(h.name)
    for drive in drives:
        m = re.fullmatch(r"/dev/drbd(\d+)", drive)
        if not m:
            continue
        minor = int(m.group(1))
        copy = next(
            (c for c in h.copies.values() if c.up and c.config.hosts[h.name].minor == minor), None
        )
        if copy is None:
            return Result(
                rc=1,
                err=f"qemu-system-x86_64: -drive file={drive}: Could not open '{drive}': No such file or directory\n",
            )
        if copy.role != "Primary":
            return Result(
                rc=1,
                err=f"qemu-system-x86_64: -drive file={drive}: Could not open '{drive}': Wrong medium type\n",
            )
        holder = h.holder_of(minor)
        if holder is not None:
            return Result(
                rc=1, err=f'qemu-system-x86_64: -drive file={drive}: Failed to get "write" lock\n'
            )
    if name in h.vms:
        return Result(
            rc=1,
            err=f"qemu-system-x86_64: -qmp {qmp}: Failed to bind socket: Address already in use\n",
        )
    if memory > h.memory_mib - h.memory_used_mib:
        return Result(
            rc=1,
            err="qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory\n",
        )
    incoming = None
    inc = _opt(argv, "-incoming")
    if inc:
        m = re.fullmatch(r"tcp:([^:]*):(\d+)", inc)
        if not m:
            return Result(
                rc=1, err=f"qemu-system-x86_64: -incoming {inc}: unsupported in the simulator\n"
            )
        incoming = (m.group(1) or "0.0.0.0", int(m.group(2)))
    qmp_path = qmp.removeprefix("unix:").split(",")[0]
    devices, netdevs = devices_from_argv(argv)
    vm = Vm(
        name=name,
        pid=f.next_pid(),
        memory_mib=memory,
        vcpus=vcpus,
        drives=drives,
        qmp_path=qmp_path,
        pidfile=pidfile,
        argv=list(argv),
        status="inmigrate" if incoming else ("paused" if "-S" in argv else "running"),
        incoming=incoming,
        taps={tap: "" for tap in netdevs.values() if tap},
        devices=devices,
        netdevs=netdevs,
    )
    h.vms[name] = vm
    h.files[pidfile] = f"{vm.pid}\n".encode()
    return Result()


@tool("pgrep")
def _pgrep(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    pattern = argv[-1] if len(argv) > 1 else ""
    full = "-a" in argv or "-af" in argv or "-fa" in argv
    lines = []
    for vm in sorted(h.vms.values(), key=lambda v: v.pid):
        cmdline = " ".join(vm.argv)
        if re.search(pattern, cmdline):
            lines.append(f"{vm.pid} {cmdline}" if full else str(vm.pid))
    if not lines:
        return Result(rc=1)
    return Result(out="\n".join(lines) + "\n")


@tool("kill")
def _kill(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    pids = [a for a in argv[1:] if not a.startswith("-")]
    for pid in pids:
        vm = next((v for v in h.vms.values() if str(v.pid) == pid), None)
        if vm is None:
            return Result(rc=1, err=f"bash: line 1: kill: ({pid}) - No such process\n")
        if "-0" in argv:
            continue
        del h.vms[vm.name]
        h.files.pop(vm.pidfile, None)
    return Result()
