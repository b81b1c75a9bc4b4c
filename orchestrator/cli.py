"""The `corral` command line: parses arguments and hands each subcommand to the
module that owns it. Must not hold cluster logic itself.

Entry point of the `corral` console script; subcommand modules live beside it.
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
    parser = argparse.ArgumentParser(
        prog="corral",
        description="corral: DRBD-mirrored KVM clusters driven by an event log in etcd",
    )
    parser.add_argument("--version", action="version", version=f"corral {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from simulators.cli import add_sim_parser

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
