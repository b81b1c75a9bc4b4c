"""The `image-write` verb: an OS image from the node's image directory written onto
an instance's DRBD device (raw, with `qemu-img convert`), only after its sha256 is
the one the catalogue names, so a missing or altered image never touches a disk.
The `image-fetch` verb: an image from an HTTP(S) URL downloaded into that
directory with `curl` (kept only when its sha256 is the catalogue's).

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
EX_NOINPUT = 66  # the image is not on this node (or its URL answers an HTTP error)
EX_UNAVAILABLE = 69  # the URL could not be reached: worth trying again
CURL_HTTP_ERROR = 22
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_URL_RE = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]{1,2000}")
FETCH_MAX_BYTES = 64 * 1024**3


def _image_sha(args: list[str]) -> tuple[str, str]:
    image = check_name(args[0], what="image")
    sha = args[1]
    if not _SHA256_RE.fullmatch(sha):
        raise Refused(f"sha256 {sha!r} is not 64 lowercase hex digits")
    return image, sha


def _summed(env: NodeEnv, path: str) -> str | None:
    """The file's sha256, or None when it cannot be read."""
    done = env.run(["sha256sum", "--", path])
    return done.stdout.decode(errors="replace").split(" ", 1)[0] if done.rc == 0 else None


def image_fetch(args: list[str], options: list[str], stdin: bytes) -> Callable[[NodeEnv], Outcome]:
    """IMAGE SHA256 URL -> what to do, or Refused. An image already there with this
    checksum is not fetched again; a download with another one is removed."""
    image, sha = _image_sha(args)
    url = args[2]
    if not _URL_RE.fullmatch(url):
        raise Refused(f"url {url[:80]!r} is not an http(s) URL")
    path = f"{IMAGE_DIR}/{image}"

    def act(env: NodeEnv) -> Outcome:
        if _summed(env, path) == sha:
            return Outcome(0, f"{path} is already there\n".encode())
        got = env.run(
            [
                "curl",
                "--fail",
                "--silent",
                "--show-error",
                "--location",
                "--proto",
                "=http,https",
                "--proto-redir",
                "=http,https",
                "--max-filesize",
                str(FETCH_MAX_BYTES),
                "--create-dirs",
                "--output",
                path,
                "--url",
                url,
            ]
        )
        if got.rc != 0:
            env.remove_file(path)
            why = got.stderr.decode(errors="replace").strip()[:300]
            # curl's 22: the server answered an HTTP error (no such image there);
            # anything else (no route, a timeout) may pass: tried again later
            rc = EX_NOINPUT if got.rc == CURL_HTTP_ERROR else EX_UNAVAILABLE
            return Outcome(rc, b"", f"image: fetching {url} failed: {why}\n".encode())
        summed = _summed(env, path)
        if summed != sha:
            env.remove_file(path)
            return Outcome(
                EX_DATAERR,
                b"",
                f"image: sha256 of {url} is {summed}, not {sha}; download removed\n".encode(),
            )
        return Outcome(0, f"fetched {url} to {path}\n".encode())

    return act


def image_write(args: list[str], options: list[str], stdin: bytes) -> Callable[[NodeEnv], Outcome]:
    """IMAGE SHA256 FORMAT MINOR -> what to do, or Refused."""
    image, sha = _image_sha(args)
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
