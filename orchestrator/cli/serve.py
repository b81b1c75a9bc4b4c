"""`corral serve`: run the orchestrator in the foreground against one cluster's
event log (etcd) and its nodes (SSH with pinned host keys) until SIGINT/SIGTERM.

Wiring only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path

from events.lifecycle.seal_keys import SealSigner
from orchestrator.cli.context import UsageError, add_etcd_options, target_from_args
from orchestrator.logs import configure_logging
from orchestrator.service import ServiceConfig, run_service
from reactors.context import ReactorSettings
from reactors.nodes.fence_config import FencingConfig

DEFAULT_SEAL_KEY = "/etc/corral/seal.key"
DEFAULT_FENCING = "/etc/corral/fencing.yaml"


def add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the orchestrator (reactors) in the foreground")
    add_etcd_options(p)
    p.add_argument("--cluster", help="cluster name (default: $CORRAL_CLUSTER)")
    p.add_argument("--known-hosts", type=Path, help="the nodes' pinned SSH host keys")
    p.add_argument("--client-key", type=Path, help="the SSH key corral logs in with")
    p.add_argument(
        "--lab",
        type=Path,
        metavar="INVENTORY",
        help="a `corral sim up` inventory.json: takes known-hosts and client key from it",
    )
    p.add_argument("--probe-interval", type=float, default=1.0, help="seconds between probes")
    p.add_argument(
        "--probe-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="a probe not answered within this counts as a failed probe (default 5; "
        "raise it for nodes without hardware virtualisation, e.g. emulated node VMs)",
    )
    p.add_argument(
        "--command-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long one command on a node may run before the node counts as not "
        "answering (default 30; a batch gets this per request)",
    )
    p.add_argument(
        "--ssh-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long an SSH connection to a node may take to open, and stay silent "
        "(keep-alives unanswered) before it is dropped (default 5)",
    )
    p.add_argument(
        "--name",
        default="",
        help="this orchestrator's name among the cluster's (default: host-pid-random)",
    )
    p.add_argument(
        "--lease-ttl",
        type=int,
        default=5,
        metavar="SECONDS",
        help="the leader's lease: a standby takes over at most this long after the "
        "leader stops (default 5; etcd's minimum is about 2)",
    )
    p.add_argument(
        "--api",
        metavar="HOST:PORT",
        help="serve the native API, /metrics and the dashboard here (HTTP, or HTTPS with "
        "--api-tls)",
    )
    p.add_argument(
        "--api-tls",
        nargs=2,
        type=Path,
        metavar=("CERT", "KEY"),
        help="serve the native API and dashboard over HTTPS with this certificate and key",
    )
    p.add_argument("--tokens", type=Path, help="API tokens file (see `corral token add`)")
    p.add_argument("--public-metrics", action="store_true", help="serve /metrics without a token")
    p.add_argument("--rapi", metavar="HOST:PORT", help="serve Ganeti RAPI v2 (HTTPS) here")
    p.add_argument("--rapi-users", type=Path, help="Ganeti RAPI users file")
    p.add_argument(
        "--rapi-cert-dir",
        type=Path,
        default=Path("/var/lib/corral/rapi"),
        help="certificate and key (a self-signed pair is made on first start)",
    )
    p.add_argument(
        "--rapi-anonymous-reads",
        action="store_true",
        help="let RAPI clients read without a user, as Ganeti does (off: names, addresses "
        "and tags of everything would be public)",
    )
    p.add_argument(
        "--archive",
        metavar="URL",
        help="archive old sealed events here (file:///DIR or s3://BUCKET/PREFIX"
        "[?endpoint=URL]); without it the whole log stays in etcd",
    )
    p.add_argument(
        "--archive-keep",
        type=int,
        default=200_000,
        metavar="EVENTS",
        help="events kept in etcd when archiving (default 200000)",
    )
    p.add_argument(
        "--seal-key",
        type=Path,
        metavar="FILE",
        help=f"the Ed25519 key audit seals are signed with (default {DEFAULT_SEAL_KEY}; "
        "required unless --lab; make one with `corral audit seal-key`)",
    )
    p.add_argument(
        "--fencing-config",
        type=Path,
        metavar="FILE",
        help=f"the fence agents this host may run, their addresses and secrets (default "
        f"{DEFAULT_FENCING}; with --lab and no such file: the lab's agent only)",
    )
    p.add_argument("--log-format", choices=["console", "json"], default="console")


def _listen(value: str, *, what: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"{what}: {value!r} is not HOST:PORT")
    return host, int(port)


def _seal_signer(path: Path | None, *, lab: bool) -> SealSigner | None:
    """The seal signing key: --seal-key, else the default file. Only a lab may run
    without one (its seals then show accidents, not tampering)."""
    from events.lifecycle.seal_keys import SealKeyError, SealSigner

    chosen = path or Path(DEFAULT_SEAL_KEY)
    if path is None and lab and not chosen.exists():
        return None
    try:
        return SealSigner.from_file(chosen)
    except SealKeyError as exc:
        raise UsageError(
            f"--seal-key: {exc} (make one with `corral audit seal-key --key {chosen}`)"
        ) from None


def _tls_pair(pair: list[Path] | None) -> tuple[Path, Path] | None:
    if pair is None:
        return None
    cert, key = pair
    for what, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise UsageError(f"--api-tls: the {what} {path} is not a readable file")
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except ssl.SSLError:
        raise UsageError(f"--api-tls: {key} is not the key of {cert}") from None
    return cert, key


def _fencing(path: Path | None, *, lab: bool) -> FencingConfig:
    """The host's fencing configuration: --fencing-config, else the default file;
    a lab without one may run the simulator's agent only."""
    from reactors.nodes.fence_config import FencingConfig, FencingConfigError, load_fencing

    chosen = path or Path(DEFAULT_FENCING)
    if path is None and not chosen.exists():
        if lab:
            return FencingConfig.for_lab()
        raise UsageError(
            f"no fencing configuration at {chosen}: say which fence agents this host may run "
            "(docs/security.md), or pass --fencing-config FILE"
        )
    try:
        return load_fencing(chosen)
    except FencingConfigError as exc:
        raise UsageError(str(exc)) from None


def _check_timeouts(args: argparse.Namespace) -> None:
    for flag, value, low, high in (
        ("--probe-timeout", args.probe_timeout, 0.5, 120),
        ("--command-timeout", args.command_timeout, 1, 600),
        ("--ssh-timeout", args.ssh_timeout, 0.5, 120),
    ):
        if not low <= value <= high:
            raise UsageError(f"{flag}: {value:g} is not between {low:g} and {high:g} s")


def run_serve(args: argparse.Namespace) -> int:
    known_hosts, client_key = args.known_hosts, args.client_key
    if args.lab is not None:
        try:
            inv = json.loads(args.lab.read_text())
            known_hosts = known_hosts or Path(inv["known_hosts"])
            client_key = client_key or Path(inv["client_key"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--lab: {args.lab} is not a lab inventory ({exc})") from exc
    if known_hosts is None or client_key is None:
        raise UsageError("serve needs --known-hosts and --client-key (or --lab INVENTORY)")
    for what, path in (("--known-hosts", known_hosts), ("--client-key", client_key)):
        if not path.is_file():
            raise UsageError(f"{what}: {path} is not a readable file")
    _check_timeouts(args)
    if not 2 <= args.lease_ttl <= 120:
        raise UsageError(f"--lease-ttl: {args.lease_ttl} is not between 2 and 120 seconds")
    if args.name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", args.name):
        raise UsageError(f"--name: {args.name!r} is not a name (letters, digits, . _ -)")
    target = target_from_args(args)
    configure_logging(json=args.log_format == "json")
    for what, path in (("--tokens", args.tokens), ("--rapi-users", args.rapi_users)):
        if path is not None and not path.is_file():
            raise UsageError(f"{what}: {path} is not a readable file")
    signer = _seal_signer(args.seal_key, lab=args.lab is not None)
    fencing = _fencing(args.fencing_config, lab=args.lab is not None)
    retention = None
    if args.archive:
        from events.archive import ArchiveError, parse_location
        from events.lifecycle.retention import RetentionPolicy

        try:
            parse_location(args.archive)
        except ArchiveError as exc:
            raise UsageError(f"--archive: {exc}") from exc
        if args.archive_keep < 1000:
            raise UsageError("--archive-keep: keep at least 1000 events in etcd")
        retention = RetentionPolicy(
            url=args.archive,
            keep_events=args.archive_keep,
            min_segment_events=max(1000, args.archive_keep // 4),
        )
    config = ServiceConfig(
        etcd_endpoints=target.endpoints,
        etcd_credentials=target.credentials,
        cluster=target.cluster,
        known_hosts=known_hosts,
        client_key=client_key,
        settings=ReactorSettings(
            probe_interval_s=args.probe_interval,
            probe_timeout_s=args.probe_timeout,
            lease_ttl_s=args.lease_ttl,
        ),
        name=args.name,
        command_timeout_s=args.command_timeout,
        ssh_timeout_s=args.ssh_timeout,
        api_listen=_listen(args.api, what="--api") if args.api else None,
        api_tokens=args.tokens,
        api_tls=_tls_pair(args.api_tls),
        public_metrics=args.public_metrics,
        rapi_listen=_listen(args.rapi, what="--rapi") if args.rapi else None,
        rapi_users=args.rapi_users,
        rapi_cert_dir=args.rapi_cert_dir,
        rapi_anonymous_reads=args.rapi_anonymous_reads,
        retention=retention,
        seal_signer=signer,
        fencing=fencing,
    )
    try:
        asyncio.run(run_service(config))
    except KeyboardInterrupt:
        pass
    return 0


def add_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("token", help="API tokens for `corral serve --api`")
    ts = t.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    add = ts.add_parser("add", help="mint a token; prints it once, stores only its hash")
    add.add_argument("name")
    add.add_argument("--role", choices=["viewer", "operator", "admin"], required=True)
    add.add_argument(
        "--scope", action="append", default=[], metavar="TAG", help="only instances with TAG"
    )
    add.add_argument("--file", type=Path, required=True, help="the tokens file (made 0600)")


def add_rapi_passwd_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rapi-passwd", help="print a RAPI users file line with an argon2id password hash"
    )
    p.add_argument("user")
    p.add_argument(
        "--options", default="read", help="the line's options: read, write, admin, scope=TAG"
    )


def run_rapi_passwd(args: argparse.Namespace) -> int:
    """Reads the password from the terminal (twice) or one line of stdin."""
    import getpass
    import sys

    from orchestrator.rapi.users import UsersFileError, hash_password, parse_users

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise UsageError("use a password of at least 8 characters")
    line = f"{args.user} {{ARGON2}}{hash_password(password)} {args.options}"
    try:
        parse_users(line, source="the new line")
    except UsersFileError as exc:
        raise UsageError(str(exc)) from None
    print(line)
    return 0


def run_token(args: argparse.Namespace) -> int:
    from orchestrator.api.auth import TokensFileError, add_token
    from orchestrator.roles import Role

    try:
        token = add_token(args.file, name=args.name, role=Role(args.role), scope_tags=args.scope)
    except (TokensFileError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    print(token)
    return 0
