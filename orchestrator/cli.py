"""The `corral` command line: parses arguments and hands each subcommand to the
module that owns it. Must not hold cluster logic itself.

Entry point of the `corral` console script; subcommand modules live beside it
(`cli_desired`, `cli_status`, `cli_objects`, `cli_events`, `cli_serve`, and
`simulators.cli` for `corral sim`). Every error a user can cause is printed as one
clear message with exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("corral")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    from orchestrator.cli_desired import add_desired_parsers
    from orchestrator.cli_events import add_events_parsers
    from orchestrator.cli_objects import add_object_parsers
    from orchestrator.cli_plan_tools import add_plan_tool_parsers
    from orchestrator.cli_serve import add_serve_parser, add_token_parser
    from orchestrator.cli_status import add_status_parsers
    from simulators.cli import add_sim_parser

    parser = argparse.ArgumentParser(
        prog="corral",
        description="corral: DRBD-mirrored KVM clusters driven by an event log in etcd",
    )
    parser.add_argument("--version", action="version", version=f"corral {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_desired_parsers(sub)
    add_status_parsers(sub)
    add_object_parsers(sub)
    add_events_parsers(sub)
    add_plan_tool_parsers(sub)
    add_serve_parser(sub)
    add_token_parser(sub)
    add_sim_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "sim":
        from simulators.cli import run_sim

        return run_sim(args)
    from orchestrator.cli_context import UsageError

    try:
        return _dispatch(args)
    except UsageError as exc:
        print(f"corral {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("plan", "apply"):
        from orchestrator.cli_desired import run_desired

        return run_desired(args)
    if args.command == "status":
        from orchestrator.cli_status import run_status

        return run_status(args)
    if args.command == "cluster":
        from orchestrator.cli_status import run_cluster

        return run_cluster(args)
    if args.command in ("instance", "node", "job"):
        from orchestrator.cli_objects import run_objects

        return run_objects(args)
    if args.command == "events":
        from orchestrator.cli_events import run_events

        return run_events(args)
    if args.command == "audit":
        from orchestrator.cli_events import run_audit

        return run_audit(args)
    if args.command == "export":
        from orchestrator.cli_plan_tools import run_export

        return run_export(args)
    if args.command == "capacity":
        from orchestrator.cli_plan_tools import run_capacity

        return run_capacity(args)
    if args.command == "serve":
        from orchestrator.cli_serve import run_serve

        return run_serve(args)
    if args.command == "token":
        from orchestrator.cli_serve import run_token

        return run_token(args)
    return 1


if __name__ == "__main__":
    sys.exit(main())
