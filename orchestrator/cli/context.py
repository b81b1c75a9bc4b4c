"""What every `corral` subcommand needs before it can do anything: which etcd and
which cluster (flags, then environment, then the desired-state file), who is
asking (the actor recorded on events), the folded state, and how to print a table
or JSON.

Must not decide anything about the cluster.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (the offline commands start without the event log's code)
    from events.state import ClusterState
    from events.store import EventStore

ENV_ETCD = "CORRAL_ETCD"
ENV_CLUSTER = "CORRAL_CLUSTER"
ENV_ACTOR = "CORRAL_ACTOR"
ENV_ARCHIVE = "CORRAL_ARCHIVE"  # the archive as mounted on this host, if not where recorded


class UsageError(Exception):
    """A command line that cannot be carried out as given; printed, exit status 1."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    endpoints: tuple[str, ...]
    cluster: str


def add_target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--etcd",
        metavar="URL[,URL]",
        help=f"etcd endpoints (default: ${ENV_ETCD}, else the file's cluster.etcd)",
    )
    parser.add_argument(
        "--cluster", help=f"cluster name (default: ${ENV_CLUSTER}, else the file's cluster.name)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def resolve_target(
    *,
    etcd: str | None,
    cluster: str | None,
    env: Mapping[str, str],
    file_endpoints: Sequence[str] = (),
    file_cluster: str | None = None,
) -> Target:
    raw = etcd or env.get(ENV_ETCD) or ",".join(file_endpoints)
    endpoints = tuple(e.strip() for e in raw.split(",") if e.strip())
    if not endpoints:
        raise UsageError(
            f"which etcd? pass --etcd http://HOST:2379, set {ENV_ETCD}, or use -f FILE "
            "whose cluster.etcd lists it"
        )
    for e in endpoints:
        if e.startswith("https://"):
            raise UsageError(f"--etcd: {e!r}: TLS to etcd is not supported yet; use http://")
        hostport = e.split("://", 1)[1] if "://" in e else e
        host, _, port = hostport.rstrip("/").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--etcd: {e!r} is not HOST:PORT or http://HOST:PORT")
    name = cluster or env.get(ENV_CLUSTER) or file_cluster
    if not name:
        raise UsageError(f"which cluster? pass --cluster NAME or set {ENV_CLUSTER}")
    return Target(endpoints=endpoints, cluster=name)


def target_from_args(args: argparse.Namespace) -> Target:
    return resolve_target(etcd=args.etcd, cluster=args.cluster, env=os.environ)


def actor() -> str:
    """Who is asking: $CORRAL_ACTOR, else user:<login name>."""
    explicit = os.environ.get(ENV_ACTOR)
    if explicit:
        return explicit
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"user:uid{os.getuid()}"


@asynccontextmanager
async def open_store(target: Target) -> AsyncIterator[EventStore]:
    # The store (aetcd, grpc) is imported only by commands that talk to etcd:
    # offline ones (`--htools FILE`) start without it.
    from events.archive import ArchiveError
    from events.store import ArchiveUnreadable, EtcdUnavailable, EventStore

    try:
        async with EventStore.connect(list(target.endpoints), target.cluster) as store:
            store.archive_override = os.environ.get(ENV_ARCHIVE, "")
            yield store
    except (EtcdUnavailable, ArchiveUnreadable, ArchiveError) as exc:
        raise UsageError(f"{exc}") from exc


async def current_state(store: EventStore) -> ClusterState:
    from events.loading import load_state

    return await load_state(store)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def table(rows: Sequence[Sequence[object]], *, header: Sequence[str]) -> str:
    """Left-aligned columns, the way gnt-instance list prints them."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def size(mib: int) -> str:
    if mib >= 1024 and mib % 1024 == 0:
        return f"{mib // 1024}G"
    if mib >= 1024:
        return f"{mib / 1024:.1f}G"
    return f"{mib}M"
