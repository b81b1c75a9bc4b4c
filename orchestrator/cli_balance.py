"""`corral balance`: plan moves that lower Ganeti's cluster score (`--plan`, live
or offline on an htools file like `hbal -t`), or plan and carry them out on the
live cluster (`--apply`): jobs submitted through `orchestrator.operations`, moves
touching disjoint nodes in parallel rounds, each round waited for with progress
lines, stopping at the first failed job.

Must not move anything itself: the job runner does, one job per instance at a
time. Comes after `orchestrator.cli_context` (state, actor), the pure planners
`reactors.balance_plan` / `reactors.balance_apply` and
`orchestrator.balance_cores` (which runs the planner's searches on the CPUs
there are); wired into `orchestrator.cli` by `add_balance_parsers` /
`run_balance`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from events.ids import JobId
from events.model import JOB_FINAL_STATUSES, NodeHealth
from events.projection import fold
from events.state import ClusterState
from events.store import EventStore
from orchestrator.balance_cores import plan_on_cores
from orchestrator.cli_context import (
    UsageError,
    actor,
    add_target_options,
    current_state,
    open_store,
    print_json,
    size,
    target_from_args,
)
from orchestrator.operations import OperationRefused, submit_job
from reactors.balance_apply import job_steps, rounds
from reactors.balance_model import BCluster, from_state
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
from reactors.htools_text import parse, render

_UNHEALTHY = (NodeHealth.LOST, NodeHealth.FENCED, NodeHealth.PARTITIONED, NodeHealth.SUSPECT)


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
        "than the greedy one (budget, the default), the shortest plan ending no higher "
        "than the greedy one (moves), or the plan ending lowest (score)",
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
        plan, took = _plan(cluster, args, avoid=frozenset())
        _report(plan, took, args)
        return 0
    if args.apply:
        return asyncio.run(_apply(args))
    if args.watch:
        return _watch(args)
    state = asyncio.run(_load(args))
    plan, took = _plan(from_state(state=state), args, avoid=_avoid(state))
    _report(plan, took, args)
    return 0


def _watch(args: argparse.Namespace) -> int:
    """The continuous mode: rate-limited by --interval and --max-moves per look; moves
    only when the plan gains at least --threshold. Ends on Ctrl-C, after --rounds
    looks, or when an applied move fails (exit 1)."""
    looks = 0
    while True:
        looks += 1
        state = asyncio.run(_load(args))
        plan, _ = _plan(from_state(state=state), args, avoid=_avoid(state))
        gain = plan.score_before - plan.score_after
        stamp = time.strftime("%H:%M:%S")
        if plan.moves and gain >= args.threshold:
            print(
                f"{stamp} score {plan.score_before:.4f}: {len(plan.moves)} move(s) gain "
                f"{gain:.4f} >= {args.threshold}; applying",
                flush=True,
            )
            if asyncio.run(_apply(args)) != 0:
                return 1
        else:
            print(
                f"{stamp} score {plan.score_before:.4f}: best plan gains {gain:.4f} "
                f"< {args.threshold}; nothing to do",
                flush=True,
            )
        if args.rounds and looks >= args.rounds:
            return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


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


async def _load(args: argparse.Namespace) -> ClusterState:
    async with open_store(target_from_args(args)) as store:
        return await current_state(store)


def _avoid(state: ClusterState) -> frozenset[str]:
    """Nodes that must take nothing: not answering, suspected, lost or fenced."""
    return frozenset(name for name, obs in state.observed.items() if obs.health in _UNHEALTHY)


@dataclass(frozen=True, slots=True)
class _Took:
    """How long planning took, how many searches ran in worker processes and
    how those were started ("fork", "spawn"; None: no worker)."""

    seconds: float
    in_workers: int
    started_by: str | None = None

    def __str__(self) -> str:
        where = f", {self.in_workers + 1} processes" if self.in_workers else ""
        return f"{self.seconds:.2f}s{where}"


def _plan(
    cluster: BCluster, args: argparse.Namespace, *, avoid: frozenset[str]
) -> tuple[BalancePlan, _Took]:
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
    took = _Took(
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


def _plan_doc(plan: BalancePlan, took: _Took) -> dict[str, Any]:
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


def _report(plan: BalancePlan, took: _Took, args: argparse.Namespace) -> None:
    if args.json:
        print_json(_plan_doc(plan, took))
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
        }[args.prefer]
        print(f"kept: {plan.search} ({why}), of the {plan.searches} set of searches")
    for d in plan.dropped:
        print(
            f"  also planned, {d.search}: score {d.score_after:.8f} in {d.moves} moves "
            f"({d.moves_as_hbal} as hbal counts them), "
            f"{size(d.data_mib) if d.data_mib else 'no'} data copied, "
            f"{d.migrations} live migrations"
        )
    if plan.n1_failures_after:
        print(f"N+1 still failing on: {', '.join(plan.n1_failures_after)}")


# --------------------------------------------------------------------------- applying


class _Follower:
    """Folds the event log as it grows, so waiting tasks can look at job states."""

    def __init__(self, store: EventStore, state: ClusterState) -> None:
        self.store = store
        self.state = state
        self.changed = asyncio.Condition()

    async def run(self) -> None:
        async for revision, event in self.store.subscribe(self.state.revision + 1):
            self.state = fold(self.state, [(revision, event)])
            async with self.changed:
                self.changed.notify_all()

    async def until_done(self, job_id: JobId) -> tuple[str, str]:
        async with self.changed:
            while True:
                job = self.state.jobs.get(job_id)
                if job is not None and job.status.value in JOB_FINAL_STATUSES:
                    return job.status.value, job.error or ""
                await self.changed.wait()


async def _run_move(follower: _Follower, store: EventStore, move: Move) -> str | None:
    """Submit the move's jobs one after another; None on success, else why not."""
    for kind, params in job_steps(move):
        try:
            accepted = await submit_job(
                store,
                follower.state,
                kind=kind,
                target=move.instance,
                params=params,
                actor=actor(),
                reason=f"balance: {move.kind.value} {move.instance}",
            )
        except OperationRefused as exc:
            return f"{move.instance}: {kind.value} refused: {exc}"
        assert accepted.job_id is not None
        status, error = await follower.until_done(accepted.job_id)
        if status != "success":
            return f"{move.instance}: job {accepted.job_id} ({kind.value}) {status}: {error}"
    return None


async def _apply(args: argparse.Namespace) -> int:
    async with open_store(target_from_args(args)) as store:
        state = await current_state(store)
        plan, took = _plan(from_state(state=state), args, avoid=_avoid(state))
        batches = rounds(plan.moves)
        quiet = args.json
        if not quiet:
            _report(plan, took, args)
        follower = _Follower(store, state)
        follow = asyncio.create_task(follower.run())
        failures: list[str] = []
        done = 0
        try:
            for n, batch in enumerate(batches, 1):
                started = time.monotonic()
                results = await asyncio.gather(*(_run_move(follower, store, m) for m in batch))
                done += sum(r is None for r in results)
                failures = [r for r in results if r is not None]
                if not quiet:
                    print(
                        f"round {n}/{len(batches)}: {len(batch)} move(s), "
                        f"{len(batch) - len(failures)} done in {time.monotonic() - started:.1f}s"
                        f" ({done}/{len(plan.moves)} moves so far)",
                        flush=True,
                    )
                if failures:
                    break
        finally:
            follow.cancel()
            try:
                await follow
            except asyncio.CancelledError:
                pass
        if quiet:
            print_json({**_plan_doc(plan, took), "done": done, "failures": failures})
        elif failures:
            for f in failures:
                print(f"failed: {f}", file=sys.stderr)
            print(
                f"stopped after {done} of {len(plan.moves)} moves: a job failed",
                file=sys.stderr,
            )
        else:
            print(f"balanced: {done} moves done, cluster score now {plan.score_after:.8f}")
        return 1 if failures else 0
