"""API latency with 2,000 instances on 40 nodes: p50/p99 of `GET /2/instances?bulk=1`
(Ganeti RAPI, HTTPS) and `GET /api/v1/instances` (native), plus `/api/v1/status`,
from one client making sequential requests over keep-alive connections. The
state is a folded projection (placements by corral's allocator); the servers are
the real ones, started as `corral serve` starts them, against a private etcd."""

from __future__ import annotations

import asyncio
import ssl
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from devtools.demo import seed_instances
from devtools.local_etcd import LocalEtcd
from events.ids import EventId, InstanceName, NodeName
from events.model import (
    DiskPlacement,
    Event,
    InstanceDeclared,
    InstancePlaced,
    NodeDeclared,
    PlacementKind,
    PolicySet,
)
from events.projection import fold_all
from events.specs import ClusterPolicy, InstanceSpec, NodeSpec
from events.state import ClusterState
from events.store import EventStore
from orchestrator.api.auth import ApiAuth, new_token_entry
from orchestrator.api.server import start_api
from orchestrator.rapi.server import start_rapi
from orchestrator.rapi.users import RapiUsers
from orchestrator.roles import Role

NODES = 40
INSTANCES = 2000
REQUESTS = 100


def big_state() -> ClusterState:
    events: list[tuple[int, Event]] = [
        (
            1,
            PolicySet(
                id=EventId("p"),
                time=0.0,
                actor="bench",
                cluster_name="bench",
                policy=ClusterPolicy(),
            ),
        )
    ]
    for i in range(NODES):
        events.append(
            (
                1,
                NodeDeclared(
                    id=EventId(f"n{i}"),
                    time=0.0,
                    actor="bench",
                    spec=NodeSpec(
                        name=NodeName(f"node{i + 1:02d}"),
                        address="127.0.0.1",
                        memory_mib=256 * 1024,
                        disk_mib=8 * 1024 * 1024,
                        cpus=64,
                    ),
                ),
            )
        )
    mix = seed_instances()
    for k in range(INSTANCES):
        spec: InstanceSpec = replace(mix[k % len(mix)], name=InstanceName(f"vm{k:04d}"))
        p, s = k % NODES, (k + 1 + (k // NODES) % (NODES - 1)) % NODES
        events.append(
            (2, InstanceDeclared(id=EventId(f"d{k}"), time=0.0, actor="bench", spec=spec))
        )
        events.append(
            (
                2,
                InstancePlaced(
                    id=EventId(f"pl{k}"),
                    time=0.0,
                    actor="bench",
                    instance=spec.name,
                    primary=NodeName(f"node{p + 1:02d}"),
                    secondary=NodeName(f"node{s + 1:02d}"),
                    disks=(
                        DiskPlacement(index=0, size_mib=spec.disk_mib, minor=k, port=11000 + k),
                    ),
                    kind=PlacementKind.INITIAL,
                ),
            )
        )
    return fold_all(events)


async def _time(
    session: aiohttp.ClientSession, url: str, *, headers: dict[str, str], ssl_ctx: Any = None
) -> list[float]:
    times = []
    for _ in range(REQUESTS):
        t0 = time.perf_counter()
        async with session.get(url, headers=headers, ssl=ssl_ctx) as resp:
            body = await resp.read()
            assert resp.status == 200, (url, resp.status, body[:200])
        times.append(time.perf_counter() - t0)
    return times


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _run() -> dict[str, Any]:
    state = big_state()
    with tempfile.TemporaryDirectory() as tmp:
        etcd = LocalEtcd(data_dir=Path(tmp) / "etcd").start()
        try:
            async with EventStore.connect([etcd.endpoint], "bench") as store:
                token, entry = new_token_entry(name="bench", role=Role.VIEWER)
                api = await start_api(
                    host="127.0.0.1",
                    port=0,
                    state=lambda: state,
                    store=store,
                    auth=ApiAuth(entries=(entry,)),
                )
                rapi = await start_rapi(
                    host="127.0.0.1",
                    port=0,
                    state=lambda: state,
                    store=store,
                    users=RapiUsers({}),
                    cert_dir=Path(tmp) / "cert",
                )
                try:
                    api_port = api.addresses[0][1]
                    rapi_port = rapi.addresses[0][1]
                    ctx = ssl.create_default_context()
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    auth = {"Authorization": f"Bearer {token}"}
                    async with aiohttp.ClientSession() as session:
                        results = {
                            "GET /2/instances?bulk=1 (RAPI, HTTPS)": await _time(
                                session,
                                f"https://127.0.0.1:{rapi_port}/2/instances?bulk=1",
                                headers={},
                                ssl_ctx=ctx,
                            ),
                            "GET /api/v1/instances": await _time(
                                session,
                                f"http://127.0.0.1:{api_port}/api/v1/instances",
                                headers=auth,
                            ),
                            "GET /api/v1/status": await _time(
                                session, f"http://127.0.0.1:{api_port}/api/v1/status", headers=auth
                            ),
                        }
                finally:
                    await api.cleanup()
                    await rapi.cleanup()
        finally:
            etcd.stop()
    table: list[list[Any]] = [
        ["request (2,000 instances, 40 nodes)", "p50 ms", "p99 ms", "mean ms"]
    ]
    figures: dict[str, Any] = {}
    for label, times in results.items():
        p50, p99 = _pct(times, 0.5) * 1000, _pct(times, 0.99) * 1000
        mean = statistics.mean(times) * 1000
        table.append([label, round(p50, 1), round(p99, 1), round(mean, 1)])
        figures[label] = {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "n": len(times)}
    return {"table": table, "results": figures, "requests_each": REQUESTS}


def run() -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    return asyncio.run(_run())
