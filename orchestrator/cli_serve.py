"""`corral serve`: run the orchestrator in the foreground against one cluster's
event log (etcd) and its nodes (SSH with pinned host keys) until SIGINT/SIGTERM.

Wiring only. Comes after `orchestrator.cli`; hands over to `orchestrator.service`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from orchestrator.cli_context import UsageError, resolve_target
from orchestrator.logs import configure_logging
from orchestrator.service import ServiceConfig, run_service
from reactors.context import ReactorSettings


def add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the orchestrator (reactors) in the foreground")
    p.add_argument("--etcd", metavar="URL[,URL]", help="etcd endpoints (default: $CORRAL_ETCD)")
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
    p.add_argument("--log-format", choices=["console", "json"], default="console")


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
    target = resolve_target(etcd=args.etcd, cluster=args.cluster, env=os.environ)
    configure_logging(json=args.log_format == "json")
    config = ServiceConfig(
        etcd_endpoints=target.endpoints,
        cluster=target.cluster,
        known_hosts=known_hosts,
        client_key=client_key,
        settings=ReactorSettings(probe_interval_s=args.probe_interval),
    )
    try:
        asyncio.run(run_service(config))
    except KeyboardInterrupt:
        pass
    return 0
