"""Which etcd releases keep every write they acknowledged: the releases known to
lose committed writes, and the advice corral gives about one. corral's promise
that nothing acknowledged is ever lost rests on etcd keeping it.

Pure: no I/O, no logging. Reading a server's or a binary's version is the
caller's business.
"""

from __future__ import annotations

import re

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")

# The oldest patch release of each minor line without a known committed-write
# loss (the minimums Kubernetes recommends for production, kubernetes/website
# #40816): 3.5.0-3.5.2 lose committed writes on a member killed under load
# (etcd-io/etcd#13766; this project's three-member test saw one such loss on
# 3.5.1), and 3.4.21 and 3.5.5 carry another inconsistency.
_SAFE_FROM = {(3, 4): 22, (3, 5): 6}
RECOMMENDED = "etcd 3.4.22 or newer in the 3.4 line, or 3.5.6 or newer"


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The first MAJOR.MINOR.PATCH in `text` (`etcd --version` output, or a
    server's status), None if there is none."""
    found = _VERSION.search(text)
    if found is None:
        return None
    major, minor, patch = (int(g) for g in found.groups())
    return major, minor, patch


def version_problem(version: str) -> str:
    """Why this etcd release may lose what corral was told is stored, in words;
    "" for a release without a known loss. An unreadable version is a problem too:
    it cannot be checked."""
    parsed = parse_version(version)
    if parsed is None:
        return f"etcd's version {version!r} could not be read; corral needs {RECOMMENDED}"
    major, minor, patch = parsed
    if (major, minor) > max(_SAFE_FROM):
        return ""
    safe_from = _SAFE_FROM.get((major, minor))
    if safe_from is not None and patch >= safe_from:
        return ""
    if (major, minor, patch) in {(3, 5, 0), (3, 5, 1), (3, 5, 2)}:
        why = "a member killed under load can lose committed writes (etcd-io/etcd#13766)"
    elif (major, minor, patch) in {(3, 4, 21), (3, 5, 5)}:
        why = "it carries a known data-inconsistency bug"
    elif safe_from is not None:
        why = "it is older than the releases recommended for production"
    else:
        why = "this release line is no longer maintained"
    return f"etcd {major}.{minor}.{patch}: {why}; corral needs {RECOMMENDED}"
