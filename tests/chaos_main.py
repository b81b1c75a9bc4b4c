"""`make chaos SEEDS=N`: N seeded fault schedules, one line each, exit 1 on the first
broken one (its seed reproduces it)."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog

from tests.support.chaos import make_schedule, run_schedule


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    passed = 0
    for seed in range(seeds):
        schedule = make_schedule(seed, length=12)
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                asyncio.run(run_schedule(Path(tmp), schedule.steps))
            except Exception as exc:
                print(f"seed {seed}: FAILED after {time.monotonic() - started:.0f}s: {exc}")
                print(f"  steps: {schedule.steps}")
                print(f"{passed}/{seeds} schedules passed")
                return 1
        passed += 1
        print(
            f"seed {seed}: ok ({time.monotonic() - started:.0f}s) "
            f"{' '.join(a for a, _ in schedule.steps)}",
            flush=True,
        )
    print(f"{passed}/{seeds} schedules passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
