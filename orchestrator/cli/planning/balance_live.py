"""`corral balance` on the live cluster: plan from the folded event log
(`--plan`), carry the plan out (`--apply`: jobs submitted through
`orchestrator.operations`, moves touching disjoint nodes in parallel rounds,
each round waited for with progress lines, stopping at the first failed job),
or rebalance whenever the score drifts (`--watch`).

Must not move anything itself: the job runner does, one job per instance at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from events.ids import JobId
from events.loading import follow
from events.model import JOB_FINAL_STATUSES
from events.state import ClusterState
from events.store import EventStore
from orchestrator.cli.context import (
    actor,
    current_state,
    open_store,
    print_json,
    read_state,
    target_from_args,
)
from orchestrator.cli.planning.balance_report import plan_cluster, plan_doc, report_plan
from orchestrator.operations import OperationRefused, submit_job
from reactors.balance.apply import job_steps
from reactors.balance.plan import Move
from reactors.balance.rounds import rounds
from reactors.htools.model import from_state


def run_live(args: argparse.Namespace) -> int:
    """`run_balance` for the live cluster (its arguments already checked)."""
    if args.apply:
        return asyncio.run(_apply(args))
    if args.watch:
        return _watch(args)
    state = read_state(args)
    avoid = _avoid(state)
    plan, took = plan_cluster(from_state(state=state), args, avoid=avoid)
    report_plan(plan, took, args, avoid=avoid)
    return 0


def _watch(args: argparse.Namespace) -> int:
    """The continuous mode: rate-limited by --interval and --max-moves per look; moves
    only when the plan gains at least --threshold. Ends on Ctrl-C, after --rounds
    looks, or when an applied move fails (exit 1)."""
    looks = 0
    while True:
        looks += 1
        state = read_state(args)
        plan, _ = plan_cluster(from_state(state=state), args, avoid=_avoid(state))
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


def _avoid(state: ClusterState) -> frozenset[str]:
    """Nodes that must take nothing: not answering, suspected, lost or fenced."""
    return frozenset(name for name, obs in state.observed.items() if not obs.health.healthy)


class _Follower:
    """Folds the event log as it grows, so waiting tasks can look at job states."""

    def __init__(self, store: EventStore, state: ClusterState) -> None:
        self.store = store
        self.state = state
        self.changed = asyncio.Condition()

    async def run(self) -> None:
        async for _, state in follow(self.store, self.state):
            self.state = state
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
                actor=actor(store),
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
        avoid = _avoid(state)
        plan, took = plan_cluster(from_state(state=state), args, avoid=avoid)
        batches = rounds(plan.moves)
        quiet = args.json
        if not quiet:
            report_plan(plan, took, args, avoid=avoid)
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
            print_json({**plan_doc(plan, took), "done": done, "failures": failures})
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
