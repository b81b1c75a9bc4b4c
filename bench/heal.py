"""Heal timeline on a simulated 20-node cluster with 400 running instances: one
node crashed; detect, fence, first/last instance back on its former secondary
(p50/p99/max), and redundancy rebuilt. Lost timeout as configured (FAST: 2 s)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.heal_timeline import build_timeline, percentile
from simulators.lab import HostConfig
from tests.support.cluster_harness import FAST, cluster, instances

# 20 nodes: probe each every 0.5 s (FAST's 0.2 s makes the simulator itself the
# bottleneck on 2 cores); timeouts as in FAST.
SETTINGS = replace(FAST, probe_interval_s=0.5, resync_interval_s=5.0)


async def _run(nodes: int, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        hosts = [
            HostConfig(
                name=f"node{i + 1:02d}", memory_mib=64 * 1024, disk_mib=2 * 1024 * 1024, cpus=32
            )
            for i in range(nodes)
        ]
        async with cluster(
            Path(tmp), hosts=hosts, settings=SETTINGS, sync_rate_mib_s=10_000_000
        ) as c:
            await c.declare_nodes()
            await c.declare_instances(instances(count, memory=(512, 1024, 2048)))
            engine = await c.start_engine()
            t0 = time.monotonic()
            while not c.converged():
                await asyncio.sleep(2)
                done = sum(1 for n in engine.state.desired.instances if c.running_on(n))
                print(
                    f"  converging: {done}/{count} running after {time.monotonic() - t0:.0f}s",
                    flush=True,
                )
                if time.monotonic() - t0 > 1800:
                    raise TimeoutError("not converged")
            victim = "node01"
            hit = [n for n, p in engine.state.placements.items() if p.primary == victim]
            crashed = time.time()
            await c.lab.crash(victim)
            await c.wait_for("all back", lambda: all(c.running_on(n) for n in hit), timeout=600)
            await c.wait_for(
                "fenced",
                lambda: (
                    engine.state.observed[victim].health.value  # type: ignore[index]
                    == "fenced"
                ),
                timeout=60,
            )
            await c.wait_for("re-protected", c.converged, timeout=1800)
            reprotected = time.time() - crashed
            events = [x async for x in c.store.read_all()]
            tl = build_timeline(node=victim, crashed_at=crashed, events=events)
            back = tl.back_times()
            return {
                "nodes": nodes,
                "instances": count,
                "primaries_on_dead_node": len(hit),
                "lost_timeout_s": SETTINGS.lost_timeout_s,
                "suspect_s": round((tl.suspect_at or crashed) - crashed, 2),
                "lost_s": round((tl.lost_at or crashed) - crashed, 2),
                "fenced_s": round((tl.fenced_at or crashed) - crashed, 2),
                "back_p50_s": round(percentile(back, 50), 2),
                "back_p99_s": round(percentile(back, 99), 2),
                "back_max_s": round(max(back) if back else float("nan"), 2),
                "first_back_s": round(min(back) if back else float("nan"), 2),
                "reprotected_s": round(reprotected, 2),
            }


def run() -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    r = asyncio.run(_run(20, 400))
    table: list[list[Any]] = [["phase", "seconds after the crash"]]
    for key in (
        "suspect_s",
        "lost_s",
        "fenced_s",
        "first_back_s",
        "back_p50_s",
        "back_p99_s",
        "back_max_s",
        "reprotected_s",
    ):
        table.append([key.removesuffix("_s"), r[key]])
    table.append(["(primaries on the dead node)", r["primaries_on_dead_node"]])
    table.append(["(lost timeout)", r["lost_timeout_s"]])
    return {**r, "table": table}
