"""The `corral` command line: parses arguments and hands each subcommand to the
module that owns it. Must not hold cluster logic itself.

Entry point of the `corral` console script. To keep start-up short, only the
module owning the command being run is imported (its parser and its code); the
top-level help lists every command from the table below without importing any.
Every error a user can cause is printed as one clear message with exit status 1,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# command -> (module, function adding its parsers, function running it, help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "plan": (
        "orchestrator.cli_desired",
        "add_desired_parsers",
        "run_desired",
        "show what applying a desired-state file would change (exit 2 if anything)",
    ),
    "apply": (
        "orchestrator.cli_desired",
        "add_desired_parsers",
        "run_desired",
        "record a desired-state file as the cluster's desired state",
    ),
    "status": (
        "orchestrator.cli_status",
        "add_status_parsers",
        "run_status",
        "cluster summary: nodes, instances, N+1, problems",
    ),
    "cluster": (
        "orchestrator.cli_status",
        "add_status_parsers",
        "run_cluster",
        "cluster-wide checks (cluster verify)",
    ),
    "instance": (
        "orchestrator.cli_objects",
        "add_object_parsers",
        "run_objects",
        "list, inspect and operate instances",
    ),
    "node": (
        "orchestrator.cli_objects",
        "add_object_parsers",
        "run_objects",
        "list, inspect and operate nodes; reboot-plan",
    ),
    "job": (
        "orchestrator.cli_objects",
        "add_object_parsers",
        "run_objects",
        "list, inspect, follow and cancel jobs",
    ),
    "events": (
        "orchestrator.cli_events",
        "add_events_parsers",
        "run_events",
        "the event log: filter, follow, or the state at a revision",
    ),
    "audit": (
        "orchestrator.cli_events",
        "add_events_parsers",
        "run_audit",
        "audit the event log (audit verify)",
    ),
    "balance": (
        "orchestrator.cli_balance",
        "add_balance_parsers",
        "run_balance",
        "plan or apply moves that balance the cluster (like hbal)",
    ),
    "capacity": (
        "orchestrator.cli_plan_tools",
        "add_plan_tool_parsers",
        "run_capacity",
        "how many more instances of a spec fit, N+1-safe (like hspace)",
    ),
    "export": (
        "orchestrator.cli_plan_tools",
        "add_plan_tool_parsers",
        "run_export",
        "export the live cluster (htools text format)",
    ),
    "serve": (
        "orchestrator.cli_serve",
        "add_serve_parser",
        "run_serve",
        "run the orchestrator, API, dashboard and RAPI in the foreground",
    ),
    "token": (
        "orchestrator.cli_serve",
        "add_token_parser",
        "run_token",
        "API tokens for `corral serve --api`",
    ),
    "sim": (
        "simulators.cli",
        "add_sim_parser",
        "run_sim",
        "a lab of simulated nodes (real SSH servers)",
    ),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("corral")
    except PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """`--version`, reading the installed version only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kw: object) -> None:
        print(f"corral {_version()}")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for `command` (its module imported), or the overview of every
    command when None or unknown."""
    parser = argparse.ArgumentParser(
        prog="corral",
        description="corral: DRBD-mirrored KVM clusters driven by an event log in etcd",
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="print the version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMANDS:
        module, add, _, _ = COMMANDS[command]
        getattr(importlib.import_module(module), add)(sub)
        for name, (_, _, _, text) in COMMANDS.items():
            if name not in sub.choices:
                sub.add_parser(name, help=text)
    else:
        for name, (_, _, _, text) in COMMANDS.items():
            sub.add_parser(name, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # No command does matrix work large enough for OpenBLAS's thread pool to
    # help (the balancer's arrays are a few thousand cells), and its threads,
    # started when numpy is imported, would keep `corral balance` from forking
    # its workers (`orchestrator.balance_cores.start_method`). Set before any
    # command module imports numpy; a value the user set is kept.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 0
    from orchestrator.cli_context import UsageError

    module, _, run, _ = COMMANDS[args.command]
    try:
        result: int = getattr(importlib.import_module(module), run)(args)
        return result
    except UsageError as exc:
        print(f"corral {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
