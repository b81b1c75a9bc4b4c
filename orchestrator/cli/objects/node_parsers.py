"""The argument parsers of `corral node add`, `corral node check` and `corral node
reboot-plan`, apart from the code that runs them (`node_setup`, `plan_tools`).

Building the `corral instance|node|job` parsers imports this module for every
command of those groups, `instance list` as much as `node add`: it must import
only argparse and `orchestrator.cli.context`, never the modules that run these
commands (with them asyncssh and numpy, about 0.19 s of start-up).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.context import add_target_options, parse_size


def add_setup_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ssh-user", default="root", help="the operator's account (default root)")
    parser.add_argument("--ssh-key", type=Path, help="the operator's private key (default: agent)")
    parser.add_argument(
        "--host-key", metavar="SHA256:...", help="the host key's fingerprint, checked, not asked"
    )
    parser.add_argument(
        "--known-hosts",
        type=Path,
        required=True,
        help="the orchestrator's known_hosts (`corral serve --known-hosts`): pinned there",
    )
    parser.add_argument(
        "--client-key",
        type=Path,
        help="the orchestrator's private key (`corral serve --client-key`): --install gives the "
        "corral account its public half, and the checks look for it",
    )
    parser.add_argument(
        "--install", action="store_true", help="install what is missing, then check"
    )
    parser.add_argument("--reason", default="")


def add_node_parsers(nsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = nsub.add_parser(
        "add", help="check a host over SSH (optionally --install what it lacks), then add it"
    )
    add.add_argument("name")
    add.add_argument("--address", required=True, help="SSH address")
    add.add_argument("--port", type=int, default=22)
    add.add_argument("--replication-address", help="DRBD address (default: --address)")
    add.add_argument("--memory", type=parse_size, help="declared memory (default: what it has)")
    add.add_argument("--disk", type=parse_size, help="declared disk (default: the VG's free space)")
    add.add_argument("--cpus", type=int, help="declared CPUs (default: what it has)")
    add.add_argument(
        "--host-memory", type=parse_size, default=1024, help="kept for the host (default 1G)"
    )
    add.add_argument("--host-cpus", type=int, default=1, help="kept for the host (default 1)")
    add.add_argument("--volume-group", default="corral")
    add.add_argument("--fence-agent", help="e.g. fence_ipmilan (none: no automatic failover)")
    add.add_argument("--fence-option", action="append", default=[], metavar="KEY=VALUE")
    add.add_argument("--yes", action="store_true", help="pin the host key shown without asking")
    add_setup_options(add)
    add_target_options(add)
    check = nsub.add_parser("check", help="re-run a node's prerequisite checks (recorded)")
    check.add_argument("name")
    add_setup_options(check)
    add_target_options(check)


def add_reboot_plan_parser(nsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rp = nsub.add_parser("reboot-plan", help="groups of nodes that can reboot together")
    rp.add_argument(
        "--evacuate",
        action="store_true",
        help="move primaries and secondaries off each group first (default: live-migrate "
        "primaries to their secondaries)",
    )
    rp.add_argument("--htools", type=Path, help="plan on an htools text file, offline")
    add_target_options(rp)
