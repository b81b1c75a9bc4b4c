"""Allocation speed and quality: corral's `choose_pair` against Ganeti's hail.

For 4 nodes/60 instances, 16/500 and 40/1000, instances are allocated one by one
from an empty cluster, twice: once by `choose_pair` (in process) and once by the
real hail (one subprocess per request, as Ganeti runs it, on its own copy of the
cluster with its own earlier answers applied). Reported: milliseconds per
allocation for each, how many each refused, the final Ganeti cluster score of each
cluster (both by `reactors.htools.score`) and the ratios. With `hail_every` > 1,
hail answers only every n-th request of the 40-node run and its figures are then
per request on our cluster (the table says so).

Hail sees nodes with 4 spindles (`ndparams.spindle_count`): with Ganeti's default
policy (32 instance spindles per node spindle) and 1 spindle, it refuses every
node past 16 DRBD instances; corral has no such cap. Its spindle term is then a
quarter of ours; everything else is the same model.

Not imported by corral; run by `python -m bench alloc` after registration in
bench/__main__.py. Reuses the IAllocator writer of tests/support/htools/htools_tools.py.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.ids import InstanceName, NodeName
from events.specs import ClusterPolicy, DesiredCluster, DiskSpec, InstanceSpec, NodeSpec
from events.state import ClusterState
from reactors.htools.model import from_state
from reactors.htools.score import score
from reactors.placement.allocator import choose_pair
from tests.support.htools.htools_tools import HAIL, iallocator_request, run_hail
from tests.support.states.generated import place

HAIL_SPINDLES = 4
RUNS: tuple[tuple[int, int, int], ...] = ((4, 60, 1), (16, 500, 1), (40, 1000, 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Side:
    ms_per_alloc: float
    refused: int
    final_score: float | None
    requests: int


def _empty(*, nodes: int, seed: int) -> ClusterState:
    rng = random.Random(seed)
    big = nodes > 8
    specs = {
        NodeName(f"node{i + 1:02d}"): NodeSpec(
            name=NodeName(f"node{i + 1:02d}"),
            address=f"10.1.{i // 200}.{i % 200 + 1}",
            memory_mib=rng.choice([98304, 131072]) if big else rng.choice([24576, 32768]),
            disk_mib=4 * 1024 * 1024,
            cpus=rng.choice([32, 48]),
        )
        for i in range(nodes)
    }
    return ClusterState(
        desired=DesiredCluster(name="bench", policy=ClusterPolicy(vcpu_ratio=8.0), nodes=specs)
    )


def _requests(count: int, *, seed: int) -> list[InstanceSpec]:
    rng = random.Random(seed)
    return [
        InstanceSpec(
            name=InstanceName(f"vm{j:04d}"),
            memory_mib=rng.choice([512, 1024, 2048, 4096]),
            vcpus=rng.randint(1, 4),
            disks=(DiskSpec(size_mib=rng.choice([10240, 20480, 40960])),),
        )
        for j in range(count)
    ]


def _ours(state: ClusterState, requests: list[InstanceSpec]) -> tuple[_Side, ClusterState]:
    took = 0.0
    refused = 0
    for spec in requests:
        t0 = time.perf_counter()
        choice = choose_pair(state=state, spec=spec)
        took += time.perf_counter() - t0
        if choice.primary is None or choice.secondary is None:
            refused += 1
            continue
        state = place(state, spec, choice.primary, choice.secondary)
    return (
        _Side(
            ms_per_alloc=1000 * took / len(requests),
            refused=refused,
            final_score=score(from_state(state=state)).total,
            requests=len(requests),
        ),
        state,
    )


def _hail(
    state: ClusterState, requests: list[InstanceSpec], *, every: int, ours_final: ClusterState
) -> _Side:
    """hail on its own sequence (every == 1), or on every n-th request against our
    cluster as it was then (every > 1: no final score of its own)."""
    took = 0.0
    refused = 0
    asked = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "request.json"
        mirror = state
        for k, spec in enumerate(requests):
            if every > 1:
                if k % every == 0:
                    message = iallocator_request(mirror, spec, spindle_count=HAIL_SPINDLES)
                    t0 = time.perf_counter()
                    answer = run_hail(hail=HAIL, message=message, path=path)
                    took += time.perf_counter() - t0
                    asked += 1
                    refused += not answer.success
                placement = ours_final.placements.get(spec.name)
                if placement is not None:
                    mirror = place(mirror, spec, placement.primary, placement.secondary)
                continue
            message = iallocator_request(mirror, spec, spindle_count=HAIL_SPINDLES)
            t0 = time.perf_counter()
            answer = run_hail(hail=HAIL, message=message, path=path)
            took += time.perf_counter() - t0
            asked += 1
            if answer.primary is None or answer.secondary is None:
                refused += 1
                continue
            mirror = place(mirror, spec, answer.primary, answer.secondary)
    return _Side(
        ms_per_alloc=1000 * took / max(asked, 1),
        refused=refused,
        final_score=score(from_state(state=mirror)).total if every == 1 else None,
        requests=asked,
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run() -> dict[str, Any]:
    table: list[list[Any]] = [
        [
            "nodes/instances",
            "ours ms/alloc",
            "hail ms/alloc",
            "hail requests",
            "speedup",
            "ours refused",
            "hail refused",
            "ours final score",
            "hail final score",
            "score ratio ours/hail",
        ]
    ]
    figures: dict[str, Any] = {}
    for nodes, count, every in RUNS:
        start = _empty(nodes=nodes, seed=nodes)
        requests = _requests(count, seed=count)
        ours, final = _ours(start, requests)
        hail = _hail(start, requests, every=every, ours_final=final)
        ratio = (
            ours.final_score / hail.final_score
            if ours.final_score is not None and hail.final_score
            else None
        )
        label = f"{nodes}/{count}"
        table.append(
            [
                label,
                _fmt(ours.ms_per_alloc, 2),
                _fmt(hail.ms_per_alloc, 2),
                f"{hail.requests}" + ("" if every == 1 else f" (every {every}th, on our cluster)"),
                _fmt(hail.ms_per_alloc / ours.ms_per_alloc, 1) if ours.ms_per_alloc else "-",
                ours.refused,
                hail.refused,
                _fmt(ours.final_score),
                _fmt(hail.final_score),
                _fmt(ratio, 3),
            ]
        )
        figures[label] = {
            "ours_ms_per_alloc": round(ours.ms_per_alloc, 3),
            "hail_ms_per_alloc": round(hail.ms_per_alloc, 3),
            "hail_requests": hail.requests,
            "ours_refused": ours.refused,
            "hail_refused": hail.refused,
            "ours_final_score": ours.final_score,
            "hail_final_score": hail.final_score,
            "score_ratio": ratio,
        }
    return {
        "table": table,
        "hail_spindles_per_node": HAIL_SPINDLES,
        **figures,
    }


if __name__ == "__main__":
    from bench.__main__ import _print_table

    _print_table(run()["table"])
