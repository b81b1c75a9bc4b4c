"""The `image-write` verb: an OS image from the node's image directory written onto
an instance's DRBD device (raw, with `qemu-img convert`), only after its sha256 is
the one the catalogue names, so a missing or altered image never touches a disk.

Standard library only; acts only through the environment protocol. The image is
named, never given as a path: only files in IMAGE_DIR (root's) can be read.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from nodehelper.env import NodeEnv, Outcome
from nodehelper.fields import MINOR_MAX, Refused, check_name, check_number

IMAGE_DIR = "/var/lib/corral/images"
FORMATS = frozenset({"raw", "qcow2"})
EX_DATAERR = 65  # the image is not the one the catalogue names
EX_NOINPUT = 66  # the image is not on this node
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def image_write(args: list[str], options: list[str], stdin: bytes) -> Callable[[NodeEnv], Outcome]:
    """IMAGE SHA256 FORMAT MINOR -> what to do, or Refused."""
    image = check_name(args[0], what="image")
    sha = args[1]
    if not _SHA256_RE.fullmatch(sha):
        raise Refused(f"sha256 {sha!r} is not 64 lowercase hex digits")
    fmt = args[2]
    if fmt not in FORMATS:
        raise Refused(f"format {fmt!r} is not one of {', '.join(sorted(FORMATS))}")
    minor = check_number(args[3], what="minor", low=0, high=MINOR_MAX)
    path = f"{IMAGE_DIR}/{image}"

    def act(env: NodeEnv) -> Outcome:
        summed = env.run(["sha256sum", "--", path])
        if summed.rc != 0:
            why = summed.stderr.decode(errors="replace").strip()
            return Outcome(EX_NOINPUT, b"", f"image: {path} is not on this node ({why})\n".encode())
        got = summed.stdout.decode(errors="replace").split(" ", 1)[0]
        if got != sha:
            return Outcome(
                EX_DATAERR,
                b"",
                f"image: sha256 of {path} is {got}, not {sha}; nothing was written\n".encode(),
            )
        device = f"/dev/drbd{minor}"
        return env.run(["qemu-img", "convert", "-n", "-f", fmt, "-O", "raw", path, device])

    return act
