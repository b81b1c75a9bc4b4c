"""What every `corral` subcommand needs before it can do anything: which etcd, with
which TLS identity, and which cluster (flags, then environment, then the
desired-state file), who is asking (the actor recorded on events: the etcd
identity), the folded state, and how to print a table or JSON.

Must not decide anything about the cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (the offline commands start without the event log's code)
    from events.etcd_client import EtcdCredentials
    from events.state import ClusterState
    from events.store import EventStore

ENV_ETCD = "CORRAL_ETCD"
ENV_CLUSTER = "CORRAL_CLUSTER"
ENV_ARCHIVE = "CORRAL_ARCHIVE"  # the archive as mounted on this host, if not where recorded
# The etcd identity's files, as etcdctl's --cacert/--cert/--key.
ENV_CACERT = "CORRAL_ETCD_CACERT"
ENV_CERT = "CORRAL_ETCD_CERT"
ENV_KEY = "CORRAL_ETCD_KEY"


class UsageError(Exception):
    """A command line that cannot be carried out as given; printed, exit status 1."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    endpoints: tuple[str, ...]
    cluster: str
    credentials: EtcdCredentials | None = None


def add_etcd_options(parser: argparse.ArgumentParser) -> None:
    """--etcd and the TLS identity's files (every command that talks to etcd)."""
    parser.add_argument(
        "--etcd",
        metavar="URL[,URL]",
        help=f"etcd endpoints, https://HOST:PORT for TLS (default: ${ENV_ETCD}, "
        "else the file's cluster.etcd)",
    )
    parser.add_argument(
        "--etcd-cacert", metavar="FILE", help=f"CA of etcd's certificate (default: ${ENV_CACERT})"
    )
    parser.add_argument(
        "--etcd-cert",
        metavar="FILE",
        help=f"your etcd client certificate; its CN is who you are (default: ${ENV_CERT})",
    )
    parser.add_argument(
        "--etcd-key", metavar="FILE", help=f"the certificate's private key (default: ${ENV_KEY})"
    )


def add_target_options(parser: argparse.ArgumentParser) -> None:
    add_etcd_options(parser)
    parser.add_argument(
        "--cluster", help=f"cluster name (default: ${ENV_CLUSTER}, else the file's cluster.name)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def credentials_from(
    *,
    cacert: str | None,
    cert: str | None,
    key: str | None,
    env: Mapping[str, str],
) -> EtcdCredentials | None:
    """The TLS identity from flags, then the environment; None when no CA is named."""
    from pathlib import Path

    ca = cacert or env.get(ENV_CACERT)
    cert = cert or env.get(ENV_CERT)
    key = key or env.get(ENV_KEY)
    if not ca:
        if cert or key:
            raise UsageError(
                f"--etcd-cert/--etcd-key need the CA too: pass --etcd-cacert or set {ENV_CACERT}"
            )
        return None
    from events.etcd_client import EtcdConfigError, EtcdCredentials

    try:
        return EtcdCredentials(
            ca=Path(ca), cert=Path(cert) if cert else None, key=Path(key) if key else None
        )
    except EtcdConfigError as exc:
        raise UsageError(str(exc)) from None


def resolve_target(
    *,
    etcd: str | None,
    cluster: str | None,
    env: Mapping[str, str],
    file_endpoints: Sequence[str] = (),
    file_cluster: str | None = None,
    credentials: EtcdCredentials | None = None,
) -> Target:
    raw = etcd or env.get(ENV_ETCD) or ",".join(file_endpoints)
    endpoints = tuple(e.strip() for e in raw.split(",") if e.strip())
    if not endpoints:
        raise UsageError(
            f"which etcd? pass --etcd https://HOST:2379, set {ENV_ETCD}, or use -f FILE "
            "whose cluster.etcd lists it"
        )
    from events.etcd_client import EtcdConfigError, parse_endpoint

    for e in endpoints:
        try:
            parse_endpoint(e, tls=credentials is not None)
        except EtcdConfigError as exc:
            raise UsageError(f"--etcd: {exc}") from None
    name = cluster or env.get(ENV_CLUSTER) or file_cluster
    if not name:
        raise UsageError(f"which cluster? pass --cluster NAME or set {ENV_CLUSTER}")
    return Target(endpoints=endpoints, cluster=name, credentials=credentials)


def target_from_args(args: argparse.Namespace, **file: Any) -> Target:
    """The target named by the command line and the environment (`file`: the
    desired-state file's `file_endpoints` and `file_cluster`)."""
    return resolve_target(
        etcd=args.etcd,
        cluster=args.cluster,
        env=os.environ,
        credentials=credentials_from(
            cacert=args.etcd_cacert, cert=args.etcd_cert, key=args.etcd_key, env=os.environ
        ),
        **file,
    )


def actor(store: EventStore) -> str:
    """Who is asking: the etcd user this command authenticated as (its client
    certificate's CN), which etcd itself checked. Only against an etcd without
    client certificates (a lab) is it the login name, which nothing checks."""
    if store.identity:
        return f"user:{store.identity}"
    import getpass  # (its terminal handling: only the commands that append need it)

    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"user:uid{os.getuid()}"


@asynccontextmanager
async def open_store(target: Target) -> AsyncIterator[EventStore]:
    # The store (aetcd, grpc) is imported only by commands that talk to etcd:
    # offline ones (`--htools FILE`) start without it, and the archive's code
    # only when the log has an archive (`_archive_error`).
    from events.etcd_client import EtcdConfigError, EtcdPermissionDenied
    from events.store import ArchiveUnreadable, EtcdUnavailable, EventStore

    try:
        async with EventStore.connect(
            list(target.endpoints), target.cluster, credentials=target.credentials
        ) as store:
            store.archive_override = os.environ.get(ENV_ARCHIVE, "")
            yield store
    except (EtcdUnavailable, EtcdConfigError, EtcdPermissionDenied, ArchiveUnreadable) as exc:
        raise UsageError(f"{exc}") from exc
    except Exception as exc:
        if _archive_error(exc):
            raise UsageError(f"{exc}") from exc
        raise


def _archive_error(exc: Exception) -> bool:
    """An `events.archive.ArchiveError`: only possible once that module was
    imported (by whatever read the archive), so it is looked up, not imported."""
    archive = sys.modules.get("events.archive")
    return archive is not None and isinstance(exc, archive.ArchiveError)


async def current_state(store: EventStore) -> ClusterState:
    """The folded state; the instance rows saved with its checkpoint start the
    rows kept from state to state (`corral status` builds only what changed)."""
    from events.lifecycle.checkpoints import checkpoint_views
    from events.loading import load_state
    from orchestrator.cluster_report import prime_rows

    async def prime(checkpoint: ClusterState) -> None:
        views = await checkpoint_views(store, checkpoint.revision)
        if views:
            prime_rows(checkpoint, views)

    return await load_state(store, on_checkpoint=prime)


def read_state(args: argparse.Namespace) -> ClusterState:
    """The folded state of the cluster the command line names, read in an event
    loop of its own. The state comes back through a list, never as the loop's
    main task's result: `asyncio.run` looks up its SIGINT handler (a partial
    holding that task) as a `signal.Handlers` enum on the way in and out, the
    failed lookup formats the task with `%r`, and a finished task's repr holds its
    result's: the whole state's dataclass repr, 50 ms of CPU at 2,000 instances."""
    import asyncio

    found: list[ClusterState] = []

    async def load() -> None:
        async with open_store(target_from_args(args)) as store:
            found.append(await current_state(store))

    asyncio.run(load())
    return found[0]


def confirm_by_name(args: argparse.Namespace, name: str, *, refused: str, prompt: str) -> None:
    """A command that destroys data goes on with `--yes`, or once the user types
    `name` back at `prompt`; without a terminal to ask on it stops with `refused`."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(refused)
    if input(prompt).strip() != name:
        raise UsageError("not confirmed; nothing was recorded")


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


def parse_size(value: str) -> int:
    """A size argument ('512M', '10G', '2T', or MiB) as whole MiB, for argparse."""
    from events.fields.sizes import size_text

    mib = size_text(value)
    if mib is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size like 512M, 10G or 2T")
    if mib <= 0 or mib.denominator != 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be a whole number of MiB above zero")
    return int(mib)
