"""`corral balance`: its options, and planning moves that lower Ganeti's
cluster score on the CPUs there are (`plan_cluster`) with the report of the
plan (`report_plan`). Offline on an htools file (`--plan --htools`, like
`hbal -t`) all happens here; for the live cluster (`--plan`, `--apply`,
`--watch`) `run_balance` hands over to `orchestrator.cli.planning.balance_live`,
imported only then, so that offline planning starts without etcd's client.

Must not move anything itself.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from orchestrator.cli.context import (
    UsageError,
    add_target_options,
)
from orchestrator.cli.planning.balance_report import plan_cluster, report_plan
from reactors.balance.plan import (
    DEFAULT_LOOKAHEAD,
    DEFAULT_MIN_GAIN,
    DEFAULT_PREFER,
    DEFAULT_SEARCHES,
    PREFER,
    QUICK_FROM,
    SEARCH_SETS,
)
from reactors.htools.model import BCluster, Util
from reactors.htools.text import parse
from reactors.htools.utilisation import parse_utilisation, with_utilisation


def add_balance_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bal = sub.add_parser(
        "balance", help="plan (or apply) moves that lower the cluster score, N+1-safely"
    )
    mode = bal.add_mutually_exclusive_group(required=True)
    mode.add_argument("--plan", action="store_true", help="print the moves, change nothing")
    mode.add_argument("--apply", action="store_true", help="plan, then carry the moves out")
    mode.add_argument(
        "--watch",
        action="store_true",
        help="keep balancing: every --interval seconds, apply up to --max-moves moves when "
        "they would lower the score by at least --threshold",
    )
    bal.add_argument("--interval", type=float, default=300.0, help="--watch: seconds between looks")
    bal.add_argument(
        "--threshold", type=float, default=1.0, help="--watch: the score drop worth moving for"
    )
    bal.add_argument(
        "--rounds", type=int, default=0, help="--watch: stop after this many looks (0: never)"
    )
    bal.add_argument("--htools", type=Path, help="plan on an htools text file, offline (--plan)")
    bal.add_argument(
        "-U",
        "--utilisation",
        type=Path,
        metavar="FILE",
        help="--htools: instances' dynamic utilisation, as hbal -U reads it "
        "('name cpu mem dsk net' per line)",
    )
    bal.add_argument(
        "--explain",
        action="store_true",
        help="--json: also list the instances left where they are and why (the text "
        "report always does)",
    )
    bal.add_argument(
        "--reserve-stopped-memory",
        action="store_true",
        help="--htools: keep a stopped instance's memory free on its primary when placing "
        "and checking N+1 (the cluster policy reserve_stopped_memory; off, as htools count)",
    )
    bal.add_argument(
        "--write-htools", type=Path, metavar="OUT", help="write the balanced cluster here"
    )
    bal.add_argument("--max-moves", type=int, default=1000, help="at most this many moves")
    bal.add_argument(
        "--min-gain",
        type=float,
        default=DEFAULT_MIN_GAIN,
        help="stop when a move gains less (once the score is below 0.1, as hbal)",
    )
    bal.add_argument(
        "--searches",
        choices=SEARCH_SETS,
        default=DEFAULT_SEARCHES,
        help="which searches plan: full (the greedy one, picking each move among the K "
        "best by the best pair it starts, by the best move it leaves open, and greedily "
        "preferring less data among moves within 0.2 %% and 0.5 %% of the best gain; "
        "about 7 times the greedy search's CPU), quick (greedy and the two preferring "
        "less data), greedy (alone, hbal's step), or auto (the default: full "
        f"below {QUICK_FROM:,} instances times nodes, quick from there on)",
    )
    bal.add_argument(
        "--lookahead",
        type=int,
        default=DEFAULT_LOOKAHEAD,
        metavar="K",
        help=f"how many of the best moves the full set's lookahead and pairs searches "
        f"weigh (default {DEFAULT_LOOKAHEAD}; 0 or 1: the greedy search alone)",
    )
    bal.add_argument(
        "--prefer",
        choices=PREFER,
        default=DEFAULT_PREFER,
        help="of the searches' plans, keep the one ending lowest in no more moves "
        "than the greedy one (budget), the shortest plan ending no higher than the "
        "greedy one (moves: each other search stops where it first gets there), the "
        "plan ending lowest (score), or auto (the default: moves with the quick set "
        "of searches, budget with the full one)",
    )
    add_target_options(bal)


def run_balance(args: argparse.Namespace) -> int:
    if args.max_moves < 0:
        raise UsageError("--max-moves must not be negative")
    if args.lookahead < 0:
        raise UsageError("--lookahead must not be negative")
    if args.lookahead < 2 and args.searches in ("full", "quick"):
        raise UsageError(
            f"--lookahead {args.lookahead} asks for the greedy search alone; "
            f"it does not go with --searches {args.searches}"
        )
    if args.watch and (args.interval <= 0 or args.threshold < 0 or args.rounds < 0):
        raise UsageError("--interval must be positive, --threshold and --rounds not negative")
    if (args.apply or args.watch) and args.htools is not None:
        raise UsageError("--apply works on the live cluster only; use --plan with --htools")
    if args.htools is None and (args.utilisation is not None or args.reserve_stopped_memory):
        raise UsageError("--utilisation and --reserve-stopped-memory go with --htools")
    if args.htools is not None:
        cluster = _read_htools(args.htools)
        if args.utilisation is not None:
            cluster = with_utilisation(cluster, _read_utilisation(args.utilisation))
        if args.reserve_stopped_memory:
            cluster = replace(cluster, reserve_stopped=True)
        plan, took = plan_cluster(cluster, args, avoid=frozenset())
        report_plan(plan, took, args)
        return 0
    # the live cluster: etcd's client and the event log's code are imported
    # only here (offline planning, a fresh process each time, does without
    # them: about 60 ms)
    from orchestrator.cli.planning.balance_live import run_live

    return run_live(args)


# --------------------------------------------------------------------------- planning


def _read_utilisation(path: Path) -> dict[str, Util]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"--utilisation: cannot read {path}: {exc.strerror}") from exc
    try:
        return parse_utilisation(text)
    except ValueError as exc:
        raise UsageError(f"--utilisation: {path}: {exc}") from exc


def _read_htools(path: Path) -> BCluster:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"--htools: cannot read {path}: {exc.strerror}") from exc
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"--htools: {path}: {exc}") from exc
