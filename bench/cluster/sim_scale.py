"""200 simulated nodes in one process: start-up time and resident memory, and one
SSH round trip to each (targets: < 10 s, < 300 MiB)."""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh

from simulators.lab import HostConfig, Lab


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _run(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        before = _rss_mib()
        started = time.perf_counter()
        lab = await Lab.start(
            hosts=[HostConfig(name=f"n{i:03d}") for i in range(n)], state_dir=Path(tmp) / "lab"
        )
        startup = time.perf_counter() - started
        rss = _rss_mib()
        started = time.perf_counter()
        ok = 0
        for server in lab.servers.values():
            async with asyncssh.connect(
                "127.0.0.1",
                server.port,
                username="corral",
                client_keys=[str(lab.client_key_path)],
                known_hosts=str(lab.known_hosts_path),
            ) as conn:
                r = await conn.run("hostname")
                ok += r.stdout == f"{server.host.name}\n"
        roundtrips = time.perf_counter() - started
        await lab.stop()
    return {
        "nodes": n,
        "startup_s": round(startup, 2),
        "rss_mib": round(rss, 1),
        "rss_before_mib": round(before, 1),
        "ssh_connect_and_run_all_s": round(roundtrips, 2),
        "answered": ok,
    }


def run() -> dict[str, Any]:
    r = asyncio.run(_run(200))
    return {
        **r,
        "table": [
            ["measure", "value", "target"],
            ["start 200 nodes (s)", r["startup_s"], "< 10"],
            ["process RSS with 200 nodes (MiB)", r["rss_mib"], "< 300"],
            ["connect + hostname on each, serially (s)", r["ssh_connect_and_run_all_s"], "-"],
            ["nodes that answered", r["answered"], "200"],
        ],
    }
