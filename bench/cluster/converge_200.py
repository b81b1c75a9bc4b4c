"""Converge from empty at 200 simulated nodes / 4,000 instances (`bench.cluster.converge`'s
run at that size alone, a row of its own: it takes minutes on this machine).
Run with `python -m bench converge_200`."""

from __future__ import annotations

from typing import Any

from bench.cluster import converge


def run() -> dict[str, Any]:
    return converge.run([(200, 4000)])
