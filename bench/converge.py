"""Time to converge from empty: every instance placed, both DRBD copies UpToDate
and the VM running, for 60 instances on 4 nodes and 1,000 on 40 (simulated nodes
in this process, fast sync)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from devtools.demo import seed_instances
from simulators.lab import HostConfig
from tests.support.cluster_harness import FAST, cluster, instances


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
        # 40 nodes probed every 0.2 s would spend the one core on probes; a
        # production-like 1 s probe interval for the large cluster.
        settings = (
            FAST if count <= 100 else replace(FAST, probe_interval_s=1.0, resync_interval_s=5.0)
        )
        async with cluster(
            Path(tmp), hosts=hosts, settings=settings, sync_rate_mib_s=10_000_000
        ) as c:
            await c.declare_nodes()
            # The seed cluster's own mix (58.5 GiB on 4 x 24 GiB nodes) for 60/4;
            # 512 MiB-4 GiB for the large one (96 GiB nodes).
            specs = (
                seed_instances()
                if count == 60
                else instances(count, memory=(512, 1024, 2048, 4096))
            )
            await c.declare_instances(specs)
            started = time.monotonic()
            engine = await c.start_engine()

            last_full = [0.0]

            def done() -> bool:
                if engine.state.refusals:
                    raise RuntimeError(
                        f"placement refused: {sorted(engine.state.refusals.items())[:3]}"
                    )
                # Planning 1,000 instances takes a while: look at what the hosts run
                # first (cheap), and plan everything at most every 2 s, so the
                # watcher does not starve the orchestrator it is timing.
                running = sum(
                    1
                    for h in c.lab.fabric.hosts.values()
                    for v in h.vms.values()
                    if v.status == "running"
                )
                if running < count or (count > 100 and time.monotonic() - last_full[0] < 2.0):
                    return False
                last_full[0] = time.monotonic()
                return c.converged()

            await c.wait_for("converged", done, timeout=1800)
            took = time.monotonic() - started
            assert c.engine is not None
            ops = c.engine.ctx.nodes
            cli: dict[str, float] = {}
            if count <= 100:
                cli = await _cli_times(c)
            return {
                **cli,
                "nodes": nodes,
                "instances": count,
                "seconds": round(took, 1),
                "ssh_commands": getattr(ops, "commands_run", 0),
                "events": c.engine.state.event_count,
            }


async def _cli_times(c: Any) -> dict[str, float]:
    """Wall time of the real `corral status` / `corral instance list` processes on
    this cluster, from exec to exit (median and max of 7 runs)."""
    out: dict[str, float] = {}
    for label, argv in (("status", ("status",)), ("instance_list", ("instance", "list"))):
        times = []
        for _ in range(7):
            t0 = time.monotonic()
            done = await c.corral(*argv)
            times.append(time.monotonic() - t0)
            assert done.returncode == 0, done.stderr
        times.sort()
        out[f"cli_{label}_median_s"] = round(times[len(times) // 2], 3)
        out[f"cli_{label}_max_s"] = round(times[-1], 3)
    return out


def run() -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    # CORRAL_BENCH_CONVERGE="4,60" runs only the seed cluster (the 40/1000 run takes
    # over half an hour on a 2-core machine: lab and orchestrator share one process).
    sizes = [(4, 60), (40, 1000)]
    if os.environ.get("CORRAL_BENCH_CONVERGE"):
        sizes = [
            (int(n), int(c))
            for n, c in (p.split(",") for p in os.environ["CORRAL_BENCH_CONVERGE"].split(";"))
        ]
    results = []
    for n, c in sizes:
        results.append(asyncio.run(_one(n, c)))
        print(f"  {n} nodes, {c} instances: {results[-1]}", flush=True)  # kept if a later one fails
    table: list[list[Any]] = [["nodes", "instances", "converge (s)", "ssh commands", "events"]]
    table += [
        [r["nodes"], r["instances"], r["seconds"], r["ssh_commands"], r["events"]] for r in results
    ]
    for small in [r for r in results if "cli_status_median_s" in r][:1]:
        table += [
            ["", "", "", "", ""],
            [
                "corral status, 60/4 (s)",
                "median",
                small["cli_status_median_s"],
                "max",
                small["cli_status_max_s"],
            ],
            [
                "corral instance list, 60/4 (s)",
                "median",
                small["cli_instance_list_median_s"],
                "max",
                small["cli_instance_list_max_s"],
            ],
        ]
    return {"results": results, "table": table}
