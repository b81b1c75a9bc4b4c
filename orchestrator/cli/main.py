"""The `corral` command line: parses arguments and hands each subcommand to the
module that owns it. Must not hold cluster logic itself.

Entry point of the `corral` console script. To keep start-up short, only the
module owning the command being run is imported (its parser and its code); the
top-level help lists every command from the table below without importing any.
Every error a user can cause is printed as one clear message with exit status 1,
never a traceback.

The console script is `console`: `main` run as a process. The read-only reports
(`corral status`, `corral cluster ...`) run with the garbage collector paused,
and once their output is written and flushed the process ends there, without
tearing the interpreter down (freeing every module and the folded state is work
nobody waits for). `main` itself returns, for callers in-process (the tests).
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType


def _balance() -> ModuleType:
    from orchestrator.cli.planning import balance

    return balance


def _desired() -> ModuleType:
    from orchestrator.cli import desired

    return desired


def _events() -> ModuleType:
    from orchestrator.cli import events

    return events


def _objects() -> ModuleType:
    from orchestrator.cli.objects import commands

    return commands


def _plan_tools() -> ModuleType:
    from orchestrator.cli.planning import plan_tools

    return plan_tools


def _serve() -> ModuleType:
    from orchestrator.cli import serve

    return serve


def _status() -> ModuleType:
    from orchestrator.cli import status

    return status


# command -> (loader of the module owning it, its add-parsers function, its run
# function, help). Each loader imports its module only when called, so start-up
# pays only for the command being run, and the import stays visible to
# import-linter. Commands from other packages (the lab's `corral sim`) come in as
# plugins through the `corral.commands` entry point group (see `_plugins`).
COMMANDS: dict[str, tuple[Callable[[], ModuleType], str, str, str]] = {
    "plan": (
        _desired,
        "add_desired_parsers",
        "run_desired",
        "show what applying a desired-state file would change (exit 2 if anything)",
    ),
    "apply": (
        _desired,
        "add_desired_parsers",
        "run_desired",
        "record a desired-state file as the cluster's desired state",
    ),
    "status": (
        _status,
        "add_status_parsers",
        "run_status",
        "cluster summary: nodes, instances, N+1, problems",
    ),
    "cluster": (
        _status,
        "add_status_parsers",
        "run_cluster",
        "cluster-wide checks (cluster verify) and the leading orchestrator (cluster leader)",
    ),
    "instance": (
        _objects,
        "add_object_parsers",
        "run_objects",
        "list, inspect and operate instances",
    ),
    "node": (
        _objects,
        "add_object_parsers",
        "run_objects",
        "list, inspect and operate nodes; reboot-plan",
    ),
    "job": (_objects, "add_object_parsers", "run_objects", "list, inspect, follow and cancel jobs"),
    "events": (
        _events,
        "add_events_parsers",
        "run_events",
        "the event log: filter, follow, or the state at a revision",
    ),
    "audit": (_events, "add_events_parsers", "run_audit", "audit the event log (audit verify)"),
    "balance": (
        _balance,
        "add_balance_parsers",
        "run_balance",
        "plan or apply moves that balance the cluster (like hbal)",
    ),
    "capacity": (
        _plan_tools,
        "add_plan_tool_parsers",
        "run_capacity",
        "how many more instances of a spec fit, N+1-safe (like hspace)",
    ),
    "export": (
        _plan_tools,
        "add_plan_tool_parsers",
        "run_export",
        "export the live cluster (htools text format)",
    ),
    "serve": (
        _serve,
        "add_serve_parser",
        "run_serve",
        "run the orchestrator, API, dashboard and RAPI in the foreground",
    ),
    "token": (_serve, "add_token_parser", "run_token", "API tokens for `corral serve --api`"),
    "rapi-passwd": (
        _serve,
        "add_rapi_passwd_parser",
        "run_rapi_passwd",
        "a RAPI users file line with an argon2id password hash",
    ),
}


def _plugins() -> dict[str, tuple[Callable[[], ModuleType], str, str, str]]:
    """Commands other installed packages register under the `corral.commands` entry
    point group as `name = "module"`; the module holds `HELP`, `add_parser(sub)` and
    `run(args)` and must be cheap to import. The lab registers `sim` this way, so
    the product never imports the simulators."""
    from importlib.metadata import entry_points

    found: dict[str, tuple[Callable[[], ModuleType], str, str, str]] = {}
    for ep in entry_points(group="corral.commands"):
        try:
            module = importlib.import_module(ep.value)
        except ImportError:
            continue  # a plugin whose package is gone is not a command
        found[ep.name] = (functools.partial(_loaded, module), "add_parser", "run", str(module.HELP))
    return found


def _loaded(module: ModuleType) -> ModuleType:
    return module


def _commands(
    command: str | None = None,
) -> dict[str, tuple[Callable[[], ModuleType], str, str, str]]:
    """Every command, or only the built-in ones when `command` is one of them:
    reading the installed packages' entry points costs about 40 ms of start-up,
    which a built-in command does not need (a plugin cannot replace one)."""
    if command in COMMANDS:
        return COMMANDS
    return {**_plugins(), **COMMANDS}


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
    commands = _commands(command)
    if command in commands:
        load, add, _, _ = commands[command]
        getattr(load(), add)(sub)
    for name, (_, _, _, text) in commands.items():
        if name not in sub.choices:
            sub.add_parser(name, help=text)
    return parser


# Commands that read the cluster and print a report, nothing else: the garbage
# collector is paused while they run (the checkpoint they decode at 2,000
# instances is about 37,000 objects it tracks, none of them garbage in a cycle, and
# each collection walked them), and `console` ends the process once their output
# is out.
READ_ONLY = frozenset({"status", "cluster"})


def _command_of(args_list: Sequence[str]) -> str | None:
    """The command named on the command line: its first word not an option."""
    return next((a for a in args_list if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    paused = _command_of(args_list) in READ_ONLY and gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _main(args_list)
    finally:
        if paused:
            gc.enable()


def _main(args_list: list[str]) -> int:
    # No command does matrix work large enough for OpenBLAS's thread pool to
    # help (the balancer's arrays are a few thousand cells), and its threads,
    # started when numpy is imported, would keep `corral balance` from forking
    # its workers (`reactors.balance.cores.start_method`). Set before any
    # command module imports numpy; a value the user set is kept.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # gRPC's C core prints TLS handshake failures to stderr itself; corral says
    # what went wrong in one line of its own (events.etcd_client).
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    command = _command_of(args_list)
    parser = build_parser(command)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 0
    from orchestrator.cli.context import UsageError

    load, _, run, _ = _commands(args.command)[args.command]
    try:
        result: int = getattr(load(), run)(args)
        return result
    except UsageError as exc:
        print(f"corral {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def console() -> None:
    """The `corral` console script: `main` as a process. A read-only command
    runs with the collector paused to the end, and once its output is flushed
    the process ends at once (`os._exit`, the exit status unchanged): nothing is
    left to do but free memory the kernel takes back anyway. Output that cannot
    be flushed (a closed pipe), an argparse exit, or any other command exits the
    ordinary way."""
    from orchestrator.logs import configure_logging

    # Whatever a command's modules log goes to standard error, secrets masked
    # (`corral serve` configures its own format again): structlog's default
    # writes to standard output, where a warning (a checkpoint passed over) came
    # before `status --json`'s document and broke it for any reader. Here, not in
    # `main`: configured once per process, not by every caller in-process.
    configure_logging()
    args_list = sys.argv[1:]
    if _command_of(args_list) not in READ_ONLY:
        sys.exit(main(args_list))
    gc.disable()
    code = _main(args_list)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    console()
