"""Host facts (nproc, hostname, /proc/meminfo) and the few file commands corral uses
(cat, head, grep, tee, rm, mkdir, echo, test), over the host's files and its
/proc and /sys views (`read_host_file`).

No I/O: operates on `simulators.fabric` state.
"""

from __future__ import annotations

import fnmatch
import re

from simulators.fabric import Fabric, Host
from simulators.tools.drbd import proc_drbd
from simulators.tools.registry import Result, tool


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
        return proc_drbd(f, h).encode()
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
