"""A Ganeti OS definition's scripts on a simulated host, as the node helper's
`os-create`/`os-rename` run them: the script is the host's file at argv[0], read
as a tiny shell (`echo TEXT` lines print, `exit N` ends with N, the rest is
ignored); each run is recorded in `Host.os_runs` (the script, its argv and the
exact environment it got) for tests to look at, its output appended to the log
file the helper named, and a `create` that exits 0 writes the instance's first
disk: `Host.images[DISK_0_PATH]` becomes `os:INSTANCE_OS:INSTANCE_NAME`, only on
a DRBD device this host has up as Primary (else it fails as a real script's
mkfs would).

No I/O. Imports nothing from corral's product packages.
"""

from __future__ import annotations

from collections.abc import Mapping

from simulators.fabric import Fabric, Host, OsRun
from simulators.tools.images import primary_copy
from simulators.tools.registry import Result

TAIL_LINES = 20


def run_os_script(
    f: Fabric, h: Host, argv: list[str], *, env: Mapping[str, str], log: str
) -> Result:
    """What the script at argv[0] does on `h`; stderr is the log's last lines."""
    h.os_runs.append(OsRun(script=argv[0], argv=tuple(argv), env=dict(env)))
    text = h.files.get(argv[0])
    out: list[str] = []
    rc = 0
    if text is None:
        out.append(f"{argv[0]}: not found\n")
        rc = 127
    else:
        for line in text.decode(errors="replace").splitlines():
            words = line.strip().split(None, 1)
            if not words:
                continue
            if words[0] == "echo":
                out.append((words[1] if len(words) > 1 else "") + "\n")
            elif words[0] == "exit":
                rc = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
                break
    if rc == 0 and argv[0].endswith("/create"):
        device = env.get("DISK_0_PATH", "")
        copy = primary_copy(h, device)
        if copy is None:
            out.append(f"mkfs.ext4: {device}: Wrong medium type while trying to open\n")
            rc = 1
        else:
            h.images[device] = f"os:{env.get('INSTANCE_OS', '')}:{env.get('INSTANCE_NAME', '')}"
    h.files[log] = h.files.get(log, b"") + "".join(out).encode()
    tail = b"".join(h.files[log].splitlines(keepends=True)[-TAIL_LINES:])
    return Result(rc=rc, err=tail.decode(errors="replace"))
