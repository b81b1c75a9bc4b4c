"""`sha256sum`, `qemu-img convert` and `curl` on a simulated host, as the node
helper's `image-write` and `image-fetch` run them: the checksum of a file the host
holds, an image written onto a DRBD device this host has up as Primary, recorded
in `Host.images` (device -> the image's sha256) for tests to look at, and a
download from the fabric's web (`Fabric.web`: URL -> bytes; others answer 404).

No I/O. Imports nothing from corral's product packages.
"""

from __future__ import annotations

import hashlib

from simulators.drbd_model import Copy
from simulators.fabric import Fabric, Host
from simulators.tools.files import read_host_file
from simulators.tools.registry import Result, tool


@tool("sha256sum")
def _sha256sum(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    out = []
    for path in [a for a in argv[1:] if a != "--"]:
        data = read_host_file(f, h, path)
        if data is None:
            return Result(rc=1, err=f"sha256sum: {path}: No such file or directory\n")
        out.append(f"{hashlib.sha256(data).hexdigest()}  {path}\n")
    return Result(out="".join(out))


def primary_copy(h: Host, device: str) -> Copy | None:
    """The DRBD copy `device` (/dev/drbdN) is on `h` when it is up and Primary
    there (a Secondary's device cannot be opened for writing)."""
    minor = device.removeprefix("/dev/drbd")
    copy = next(
        (
            c
            for c in h.copies.values()
            if c.up and h.name in c.config.hosts and str(c.config.hosts[h.name].minor) == minor
        ),
        None,
    )
    return copy if copy is not None and copy.role == "Primary" else None


@tool("qemu-img")
def _qemu_img(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    if len(argv) < 3 or argv[1] != "convert":
        return Result(rc=1, err=f"qemu-img: simulated only for convert, not {argv[1:]}\n")
    source, device = argv[-2], argv[-1]
    data = read_host_file(f, h, source)
    if data is None:
        return Result(rc=1, err=f"qemu-img: Could not open '{source}': No such file\n")
    if primary_copy(h, device) is None:
        return Result(rc=1, err=f"qemu-img: Could not open '{device}': Wrong medium type\n")
    h.images[device] = hashlib.sha256(data).hexdigest()
    return Result()


@tool("curl")
def _curl(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    url = argv[argv.index("--url") + 1] if "--url" in argv else ""
    output = argv[argv.index("--output") + 1] if "--output" in argv else ""
    data = f.web.get(url)
    if data is None or not output:
        return Result(rc=22, err=f"curl: (22) The requested URL returned error: 404 ({url})\n")
    h.files[output] = data
    return Result()
