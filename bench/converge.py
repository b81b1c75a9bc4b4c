"""Time to converge from empty: every instance placed, both DRBD copies UpToDate
and the VM running, for 60 instances on 4 nodes and 1,000 on 40 (simulated nodes
in this process, fast sync)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from simulators.lab import HostConfig
from tests.cluster_harness import FAST, cluster, instances


async def _one(nodes: int, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        hosts = [
            HostConfig(
                name=f"node{i + 1}",
                memory_mib=96 * 1024 if count > 200 else 24 * 1024,
                disk_mib=4 * 1024 * 1024,
                cpus=32,
            )
            for i in range(nodes)
        ]
        async with cluster(Path(tmp), hosts=hosts, settings=FAST, sync_rate_mib_s=10_000_000) as c:
            await c.declare_nodes()
            await c.declare_instances(instances(count, memory=(512, 1024, 2048, 4096)))
            started = time.monotonic()
            await c.start_engine()
            await c.wait_for("converged", c.converged, timeout=1800)
            took = time.monotonic() - started
            assert c.engine is not None
            ops = c.engine.ctx.nodes
            return {
                "nodes": nodes,
                "instances": count,
                "seconds": round(took, 1),
                "ssh_commands": getattr(ops, "commands_run", 0),
                "events": c.engine.state.event_count,
            }


def run() -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    results = [asyncio.run(_one(4, 60)), asyncio.run(_one(40, 1000))]
    table: list[list[Any]] = [["nodes", "instances", "converge (s)", "ssh commands", "events"]]
    table += [
        [r["nodes"], r["instances"], r["seconds"], r["ssh_commands"], r["events"]] for r in results
    ]
    return {"results": results, "table": table}
