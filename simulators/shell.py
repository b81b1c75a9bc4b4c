"""A small shell for simulated hosts: splits an exec request into commands joined
by `&&`, `||` and `;`, honours `> FILE` redirection of stdin, exit codes and
`command not found` (127), and runs each command through `simulators.tools`.

Users as on a real node set up for corral: `root` runs every tool; the `corral`
account runs the unprivileged ones, and `sudo -n` only for the node helper (the
sudoers rule deploy/ ships), which runs in process (`simulators.node_helper`);
anything else through sudo answers as sudo does: "a password is required".

No I/O. Imports nothing from corral's product packages.
"""

from __future__ import annotations

import functools
import shlex

from simulators.fabric import Fabric, Host
from simulators.node_helper import HELPER_BODY_VERBS, HELPER_PATH, run_helper
from simulators.tools import (  # noqa: F401  (each registers its commands)
    drbd,
    files,
    images,
    lvm,
    net,
    processes,
)
from simulators.tools.registry import TOOLS, Result

# What the corral account cannot run without root (the helper runs them).
ROOT_ONLY = frozenset(
    {
        "lvcreate",
        "lvremove",
        "lvrename",
        "lvextend",
        "lvresize",
        "vgs",
        "lvs",
        "drbdadm",
        "drbdsetup",
        "qemu-system-x86_64",
        "kill",
        "tee",
        "rm",
        "mkdir",
    }
)


def split_commands(line: str) -> list[tuple[str, list[str]]]:
    """[(operator before, argv)], operator '' for the first command."""
    return [(op, list(argv)) for op, argv in _split(line)]


@functools.lru_cache(maxsize=4096)
def _split(line: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Parsed once per distinct line: a probe is the same long line every second
    on every host, and shlex is slow."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|>")
    lexer.whitespace_split = True
    tokens = list(lexer)
    commands: list[tuple[str, list[str]]] = []
    current: list[str] = []
    op = ""
    for tok in tokens:
        if tok in (";", "&&", "||"):
            commands.append((op, current))
            op, current = tok, []
        else:
            current.append(tok)
    commands.append((op, current))
    return tuple((o, tuple(argv)) for o, argv in commands if argv)


def reads_stdin(line: str) -> bool:
    """Whether a command line consumes stdin (tee, bare cat, a `>` redirection)."""
    try:
        commands = split_commands(line)
    except ValueError:
        return False
    for _, argv in commands:
        while argv and argv[0] == "sudo":
            argv = [a for a in argv[1:] if not a.startswith("-")] if len(argv) > 1 else []
        if not argv:
            continue
        if argv[0] == HELPER_PATH:
            return len(argv) > 1 and argv[1] in HELPER_BODY_VERBS
        name = argv[0].rsplit("/", 1)[-1]
        if name == "tee" or (name == "cat" and (len(argv) == 1 or argv[1] == ">")):
            return True
    return False


def run_line(fabric: Fabric, host: Host, line: str, stdin: bytes, *, user: str = "root") -> Result:
    try:
        commands = split_commands(line)
    except ValueError as exc:
        return Result(rc=2, err=f"bash: syntax error: {exc}\n")
    out, err = [], []
    rc = 0
    for op, argv in commands:
        if (op == "&&" and rc != 0) or (op == "||" and rc == 0):
            continue
        result = run_argv(fabric, host, argv, stdin, user=user)
        out.append(result.out)
        err.append(result.err)
        rc = result.rc
    return Result(rc=rc, out="".join(out), err="".join(err))


def run_argv(
    fabric: Fabric, host: Host, argv: list[str], stdin: bytes, *, user: str = "root"
) -> Result:
    if argv and argv[0] == "sudo":
        return _sudo(fabric, host, argv[1:], stdin, user=user)
    if ">" in argv:
        i = argv.index(">")
        target = argv[i + 1] if i + 1 < len(argv) else ""
        inner = run_argv(fabric, host, argv[:i], stdin, user=user)
        if inner.rc == 0:
            if user != "root" or not target.startswith(
                ("/etc/drbd.d/", "/run/corral/", "/var/lib/corral/")
            ):
                return Result(rc=1, err=f"bash: {target}: Permission denied\n")
            host.files[target] = inner.out.encode()
            return Result(err=inner.err)
        return inner
    if not argv:
        return Result()
    name = argv[0].rsplit("/", 1)[-1]
    if user != "root" and name in ROOT_ONLY:
        return Result(rc=1, err=f"{name}: Permission denied (running as {user}, not root)\n")
    return run_tool(fabric, host, argv, stdin)


def run_tool(fabric: Fabric, host: Host, argv: list[str], stdin: bytes) -> Result:
    """One tool's argv, as root."""
    name = argv[0].rsplit("/", 1)[-1]
    fn = TOOLS.get(name)
    if fn is None:
        return Result(rc=127, err=f"bash: line 1: {argv[0]}: command not found\n")
    if name == "cat" and len(argv) == 1:
        return Result(out=stdin.decode(errors="replace"))
    try:
        return fn(fabric, host, argv, stdin)
    except (ValueError, IndexError, KeyError) as exc:
        return Result(rc=1, err=f"{name}: {exc}\n")


def _sudo(fabric: Fabric, host: Host, argv: list[str], stdin: bytes, *, user: str) -> Result:
    while argv and argv[0].startswith("-"):
        if argv[0] != "-n":
            return Result(rc=1, err=f"sudo: the simulator knows only -n, not {argv[0]}\n")
        argv = argv[1:]
    if not argv:
        return Result(rc=1, err="usage: sudo -n command\n")
    if argv[0] == HELPER_PATH:
        return run_helper(fabric, host, argv[1:], stdin, run_tool)
    if user == "root":
        return run_argv(fabric, host, argv, stdin, user=user)
    return Result(rc=1, err="sudo: a password is required\n")
