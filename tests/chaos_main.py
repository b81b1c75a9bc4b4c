"""`make chaos SEEDS=N [FIRST=S]`: N seeded fault schedules (seeds S..S+N-1), one
line each (the faults it injected: a step that did not apply, such as a second
crash while a node is down, is not counted), then the faults injected per kind
over the whole run, the fences the orchestrators carried out, the minutes it
took, and the seeds that failed (each reproduces its failure: `make chaos SEEDS=1
FIRST=<seed>`); exit 1 if any did. With MINUTES=M it starts no seed after M
minutes and sums up the seeds done (Ctrl-C does the same)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import structlog

from tests.support.chaos.chaos import ACTIONS, Outcome, make_schedule, run_schedule

# Steps per schedule: 12, or $CHAOS_LENGTH (`make chaos LENGTH=20`).
LENGTH = int(os.environ.get("CHAOS_LENGTH") or "12")


def summary(
    seeds: range, failed: list[int], injected: Counter[str], fences: int, began: float
) -> None:
    if not seeds:
        print("no seed done")
        return
    passed = len(seeds) - len(failed)
    print(f"seeds {seeds.start}-{seeds.stop - 1}: {passed}/{len(seeds)} schedules passed")
    if failed:
        print(f"failed seeds: {' '.join(map(str, failed))}")
    print(f"faults injected (of {sum(injected.values())}), per kind:")
    for kind in ACTIONS:
        print(f"  {kind:24} {injected[kind]}")
    print(f"fences carried out by the orchestrators: {fences}")
    print(f"minutes: {(time.monotonic() - began) / 60:.1f}", flush=True)


def run_one(seed: int) -> Outcome | None:
    """Run one seed's schedule and print its line; None if it failed."""
    schedule = make_schedule(seed, length=LENGTH)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            outcome = asyncio.run(run_schedule(Path(tmp), schedule.steps))
        except (Exception, asyncio.CancelledError) as exc:  # a seed's, not the run's
            where = traceback.extract_tb(exc.__traceback__)[-1]
            print(
                f"seed {seed}: FAILED after {time.monotonic() - started:.0f}s: "
                f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
            )
            print(f"  steps: {schedule.steps}", flush=True)
            return None
    kinds = " ".join(f"{k}={n}" for k, n in sorted(outcome.injected.items()))
    print(
        f"seed {seed}: ok ({time.monotonic() - started:.0f}s) {kinds} fences={outcome.fences}",
        flush=True,
    )
    return outcome


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    first = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else 0
    seeds = range(first, first + count)
    fences = 0
    failed: list[int] = []
    injected: Counter[str] = Counter()
    began = time.monotonic()
    done = seeds.start
    budget = float(os.environ.get("CHAOS_MINUTES") or "inf") * 60
    try:
        for seed in seeds:
            if time.monotonic() - began > budget:
                print(
                    f"time budget of {budget / 60:.0f} minutes spent: stopping before seed {seed}"
                )
                seeds = range(seeds.start, seed)
                break
            outcome = run_one(seed)
            done = seed + 1
            if outcome is None:
                failed.append(seed)
                continue
            injected += outcome.injected
            fences += outcome.fences
    except KeyboardInterrupt:
        print(f"interrupted during seed {done}")
        seeds = range(seeds.start, done)
    summary(seeds, failed, injected, fences, began)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
