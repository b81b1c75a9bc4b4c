"""The native API bounds what one client can make it do: event streams per token
and in all, log reads paged (at most SCAN_LIMIT events read per request, the next
page named in a header) and only a few at a time; and it can serve HTTPS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from devtools.local_etcd import LocalEtcd
from events.state import ClusterState
from events.store import EventStore
from orchestrator.api import limits as api_limits
from orchestrator.api.auth import ApiAuth, new_token_entry
from orchestrator.api.limits import LIMITS
from orchestrator.api.server import start_api
from orchestrator.roles import Role
from orchestrator.tls_cert import ensure_self_signed, server_context
from tests.support.cluster.events import ev


@asynccontextmanager
async def api(
    store: EventStore, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, dict[str, str], dict[str, str], aiohttp.web.AppRunner]]:
    one, e1 = new_token_entry(name="one", role=Role.VIEWER)
    two, e2 = new_token_entry(name="two", role=Role.VIEWER)
    runner = await start_api(
        host="127.0.0.1",
        port=0,
        state=ClusterState,
        store=store,
        auth=ApiAuth(entries=(e1, e2)),
        heartbeat_s=0.2,
        dashboard=False,
        ssl_context=tls,
    )
    port = runner.addresses[0][1]
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield (
            base,
            {"Authorization": f"Bearer {one}"},
            {"Authorization": f"Bearer {two}"},
            runner,
        )
    finally:
        await runner.cleanup()


async def test_event_streams_are_limited_per_token_and_in_all(etcd: LocalEtcd) -> None:
    async with (
        EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store,
        api(store) as (base, one, two, runner),
        aiohttp.ClientSession() as s,
    ):
        limits = runner.app[LIMITS]
        limits.max_streams = 6
        url = base + "/api/v1/events/stream"
        held = [await s.get(url, headers=one) for _ in range(api_limits.MAX_STREAMS_PER_TOKEN)]
        assert all(r.status == 200 for r in held)
        refused = await s.get(url, headers=one)
        assert refused.status == 429
        assert "event streams" in (await refused.json())["error"]["message"]
        others = [await s.get(url, headers=two) for _ in range(3)]
        assert [r.status for r in others] == [200, 200, 429]  # 6 in all
        for r in held + others:
            r.close()
        for _ in range(100):  # closed streams give their places back
            if not limits.streams:
                break
            await asyncio.sleep(0.1)
        assert not limits.streams
        again = await s.get(url, headers=one)
        assert again.status == 200
        again.close()


async def test_log_reads_are_paged_and_few_at_a_time(
    etcd: LocalEtcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.api.routes_read.SCAN_LIMIT", 25)
    async with (
        EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store,
        api(store) as (base, one, _, runner),
        aiohttp.ClientSession() as s,
    ):
        for i in range(60):
            await store.append([ev(i)])
        first = await s.get(base + "/api/v1/events?since=1", headers=one)
        page = await first.json()
        assert first.status == 200 and len(page) == 25
        nxt = first.headers["X-Corral-Next-Since"]
        second = await (await s.get(base + f"/api/v1/events?since={nxt}", headers=one)).json()
        assert second[0]["revision"] > page[-1]["revision"] and len(second) == 25
        # Without `since`: the newest page only, and where it began.
        recent = await s.get(base + "/api/v1/events", headers=one)
        assert int(recent.headers["X-Corral-Scanned-From"]) > 1
        # The few heavy reads allowed at once are busy: 429, not a queue.
        runner.app[LIMITS].heavy = runner.app[LIMITS].max_heavy_reads
        busy = await s.get(base + "/api/v1/state?at=5", headers=one)
        assert busy.status == 429
        runner.app[LIMITS].heavy = 0
        assert (await s.get(base + "/api/v1/state?at=5", headers=one)).status == 200


async def test_the_native_api_serves_https(etcd: LocalEtcd, tmp_path: Path) -> None:
    paths = ensure_self_signed(cert_dir=tmp_path / "cert", hostnames=["127.0.0.1"])
    client = ssl.create_default_context(cafile=str(paths.cert))
    async with (
        EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store,
        api(store, tls=server_context(paths)) as (base, one, _, _),
        aiohttp.ClientSession() as s,
    ):
        assert base.startswith("https://")
        got = await s.get(base + "/api/v1/status", headers=one, ssl=client)
        assert got.status == 200
