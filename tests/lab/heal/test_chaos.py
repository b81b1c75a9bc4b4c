"""Hypothesis over fault schedules on the simulated cluster (node crashes, power
cycles, partitions, DRBD link cuts, manual fence confirmations, VM kills,
orchestrator restarts). Few examples here (each starts a whole cluster); longer
runs: `make chaos SEEDS=N`."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.chaos.chaos import ACTIONS, run_schedule

schedules = st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.integers(min_value=0, max_value=999)),
    min_size=3,
    max_size=8,
)


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(schedules)
def test_random_fault_schedules_keep_the_invariants(steps: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run_schedule(Path(tmp), steps))
