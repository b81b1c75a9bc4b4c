"""`corral balance`: its options, and planning moves that lower Ganeti's
cluster score on the CPUs there are (`plan_cluster`) with the report of the
plan (`report_plan`). Offline on an htools file (`--plan --htools`, like
`hbal -t`) all happens here; for the live cluster (`--plan`, `--apply`,
`--watch`) `run_balance` hands over to `orchestrator.cli_balance_live`,
imported only then, so that offline planning starts without etcd's client.

Must not move anything itself. Comes after `orchestrator.cli_context` (usage
errors, output helpers), the pure planners `reactors.balance_plan` /
`reactors.balance_rounds` and `orchestrator.balance_cores` (which runs the
planner's searches on the CPUs there are); wired into `orchestrator.cli` by
`add_balance_parsers` / `run_balance`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.balance_cores import plan_on_cores
from orchestrator.cli_context import (
    UsageError,
    add_target_options,
    print_json,
    size,
)
from reactors.balance_model import BCluster
from reactors.balance_plan import (
    DEFAULT_LOOKAHEAD,
    DEFAULT_MIN_GAIN,
    DEFAULT_PREFER,
    DEFAULT_SEARCHES,
    PREFER,
    QUICK_FROM,
    SEARCH_SETS,
    BalancePlan,
    Move,
)
from reactors.balance_rounds import rounds
from reactors.htools_text import parse, render


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
        "preferring less data: frugal; about 6 times the greedy search's CPU), quick "
        "(greedy and frugal), greedy (alone, as hbal's), or auto (the default: full "
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
    if args.htools is not None:
        cluster = _read_htools(args.htools)
        plan, took = plan_cluster(cluster, args, avoid=frozenset())
        report_plan(plan, took, args)
        return 0
    # the live cluster: etcd's client and the event log's code are imported
    # only here (offline planning, a fresh process each time, does without
    # them: about 60 ms)
    from orchestrator.cli_balance_live import run_live

    return run_live(args)


# --------------------------------------------------------------------------- planning


def _read_htools(path: Path) -> BCluster:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"--htools: cannot read {path}: {exc.strerror}") from exc
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"--htools: {path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Took:
    """How long planning took, how many searches ran in worker processes and
    how those were started ("fork", "spawn"; None: no worker)."""

    seconds: float
    in_workers: int
    started_by: str | None = None

    def __str__(self) -> str:
        where = f", {self.in_workers + 1} processes" if self.in_workers else ""
        return f"{self.seconds:.2f}s{where}"


def plan_cluster(
    cluster: BCluster, args: argparse.Namespace, *, avoid: frozenset[str]
) -> tuple[BalancePlan, Took]:
    started = time.monotonic()
    try:
        planned = plan_on_cores(
            cluster=cluster,
            max_moves=args.max_moves,
            min_gain=args.min_gain,
            avoid=avoid,
            lookahead=args.lookahead,
            prefer=args.prefer,
            search_set=args.searches,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    plan = planned.plan
    took = Took(
        seconds=time.monotonic() - started,
        in_workers=planned.in_workers,
        started_by=planned.started_by,
    )
    if args.write_htools is not None:
        try:
            args.write_htools.write_text(render(plan.cluster_after))
        except OSError as exc:
            raise UsageError(
                f"--write-htools: cannot write {args.write_htools}: {exc.strerror}"
            ) from exc
    return plan, took


def plan_doc(plan: BalancePlan, took: Took) -> dict[str, Any]:
    return {
        "score_before": round(plan.score_before, 8),
        "score_after": round(plan.score_after, 8),
        "moves": [
            {**asdict(m), "kind": m.kind.value, "score_after": round(m.score_after, 8)}
            for m in plan.moves
        ],
        "moves_as_hbal": plan.moves_as_hbal,
        "data_moved_mib": plan.data_mib,
        "migrations": plan.migrations,
        "rounds": len(rounds(plan.moves)),
        "n1_failures_before": list(plan.n1_failures_before),
        "n1_failures_after": list(plan.n1_failures_after),
        "stopped_by": plan.stopped_by,
        "searches": plan.searches,
        "prefer": plan.prefer,
        "search": plan.search,
        "dropped": [
            {
                "search": d.search,
                "score_after": round(d.score_after, 8),
                "moves": d.moves,
                "moves_as_hbal": d.moves_as_hbal,
                "data_moved_mib": d.data_mib,
                "migrations": d.migrations,
            }
            for d in plan.dropped
        ],
        "candidates_scored": plan.candidates_scored,
        "seconds": round(took.seconds, 3),
        "searches_in_workers": took.in_workers,
        "workers_started_by": took.started_by,
    }


def _move_line(n: int, m: Move) -> str:
    data = f"{size(m.data_mib)} copied" if m.data_mib else "no data"
    return (
        f"{n:>4}. {m.instance} {m.old_primary}:{m.old_secondary} => "
        f"{m.new_primary}:{m.new_secondary}  {m.kind.value}, {data}, "
        f"score {m.score_after:.8f}"
    )


def _as_hbal(plan: BalancePlan) -> str:
    """A note when relocations make the plan shorter than hbal would count it."""
    if plan.moves_as_hbal == len(plan.moves):
        return ""
    return f" ({plan.moves_as_hbal} as hbal counts them: a relocation is two)"


def report_plan(plan: BalancePlan, took: Took, args: argparse.Namespace) -> None:
    if args.json:
        print_json(plan_doc(plan, took))
        return
    for n, m in enumerate(plan.moves, 1):
        print(_move_line(n, m))
    print(
        f"cluster score {plan.score_before:.8f} -> {plan.score_after:.8f} in "
        f"{len(plan.moves)} moves{_as_hbal(plan)} ({len(rounds(plan.moves))} rounds), "
        f"{size(plan.data_mib) if plan.data_mib else 'no'} data copied, "
        f"{plan.migrations} live migrations; planned in {took} ({plan.stopped_by})"
    )
    if plan.dropped:
        why = {
            "budget": "it ends lowest in no more moves than the greedy plan",
            "moves": "the fewest moves ending no higher than the greedy plan",
            "score": "it ends lowest",
        }[plan.prefer]
        print(
            f"kept: {plan.search} ({why}: --prefer {plan.prefer}), "
            f"of the {plan.searches} set of searches"
        )
    for d in plan.dropped:
        print(
            f"  also planned, {d.search}: score {d.score_after:.8f} in {d.moves} moves "
            f"({d.moves_as_hbal} as hbal counts them), "
            f"{size(d.data_mib) if d.data_mib else 'no'} data copied, "
            f"{d.migrations} live migrations"
        )
    if plan.n1_failures_after:
        print(f"N+1 still failing on: {', '.join(plan.n1_failures_after)}")
