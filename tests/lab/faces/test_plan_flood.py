"""A megabyte of YAML posted to `POST /api/v1/desired/plan` again and again for
15 s while the orchestrator runs the cluster (API and reactors on one loop, as in
`corral serve`): a viewer is refused (403) before anything is parsed; an operator's
plans are parsed in a worker process, so the reactors' loop stays on time (its lag
is measured and printed) and no node changes health."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from events.model import NodeHealth, NodeHealthChanged
from orchestrator.api.auth import ApiAuth, new_token_entry
from orchestrator.api.server import start_api
from orchestrator.roles import Role
from simulators.fabric import CommandFault
from tests.support.cluster.cluster_harness import FAST, cluster, instances

FLOOD_S = 15.0
MIB = 1024 * 1024


def megabyte_plan() -> bytes:
    """Just under a MiB of JSON: a file of `- {a: 1}` lines (what once took 18 s
    and 446 MiB on the loop and answered 440,000 problems)."""
    line = "  - {a: 1}\n"
    # Each line is one byte longer as JSON (its newline becomes two characters).
    text = "cluster: {name: lab}\ninstances:\n" + line * ((MIB - 400) // (len(line) + 1))
    body = json.dumps({"files": [{"name": "flood.yaml", "text": text}]}).encode()
    assert MIB - 1000 < len(body) < MIB
    return body


def flood(url: str, token: str, body: bytes, until: float, statuses: list[int]) -> None:
    """Post `body` until `until` (in a thread: the client must not load the loop
    under test)."""
    while time.monotonic() < until:
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
        except OSError:
            statuses.append(0)


@pytest.mark.serial  # its loop-lag bound is for this test alone on the machine
async def test_a_megabyte_plan_flood_neither_stalls_nor_fences(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(8))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        viewer, viewer_entry = new_token_entry(name="viewer", role=Role.VIEWER)
        operator, operator_entry = new_token_entry(name="ops", role=Role.OPERATOR)
        runner = await start_api(
            host="127.0.0.1",
            port=0,
            state=lambda: engine.state,
            store=c.store,
            auth=ApiAuth(entries=(viewer_entry, operator_entry)),
        )
        try:
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}/api/v1/desired/plan"
            body = megabyte_plan()
            lags: list[float] = []
            engine.ctx.watch.on_lag = lags.append
            health_before = {n: o.health for n, o in engine.state.observed.items()}
            revision = engine.state.revision
            until = time.monotonic() + FLOOD_S
            by_viewer: list[int] = []
            by_operator: list[int] = []
            threads = [
                threading.Thread(target=flood, args=(url, viewer, body, until, by_viewer)),
                threading.Thread(target=flood, args=(url, operator, body, until, by_operator)),
                threading.Thread(target=flood, args=(url, operator, body, until, by_operator)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                await asyncio.to_thread(t.join)
            engine.ctx.watch.on_lag = None
        finally:
            await runner.cleanup()
        lags.sort()
        p99 = lags[int(len(lags) * 0.99)] if lags else 0.0
        print(
            f"\nloop lag over {FLOOD_S:.0f}s of 1 MiB plans: {len(lags)} samples, "
            f"p50 {lags[len(lags) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {lags[-1] * 1000:.1f} ms; viewer answers {sorted(set(by_viewer))} "
            f"({len(by_viewer)}), operator answers {sorted(set(by_operator))} ({len(by_operator)})"
        )
        assert by_viewer and set(by_viewer) == {403}
        assert by_operator and set(by_operator) <= {422, 503}
        assert 422 in by_operator  # parsed (off the loop), and refused: nothing recorded
        # On a shared two-core machine a single wake-up can be late for reasons of
        # its own: p99 under 100 ms, and never a stall (the watch's threshold).
        assert lags and p99 < 0.1, f"p99 loop lag {p99 * 1000:.0f} ms"
        assert lags[-1] < engine.ctx.watch.threshold_s, f"a stall of {lags[-1] * 1000:.0f} ms"
        assert {n: o.health for n, o in engine.state.observed.items()} == health_before
        assert all(h == NodeHealth.ONLINE for h in health_before.values())
        changed = [
            e
            async for r, e in c.store.read_all(from_revision=revision + 1)
            if isinstance(e, NodeHealthChanged)
        ]
        assert changed == []


async def test_a_stall_of_the_orchestrator_is_no_evidence(tmp_path: Path) -> None:
    """The loop blocked for longer than the suspect timeout (as a blocking call or
    a starved process would): the probes that failed meanwhile are no evidence,
    and no node changes health."""
    # Probes time out after a second: the ones in flight when the loop stalls for
    # longer fail, as they would against a real node.
    async with cluster(tmp_path, settings=replace(FAST, probe_timeout_s=1.0)) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(4))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        # Every probe takes 0.6 s of its 1 s: one is in flight on each node when
        # the loop stalls.
        for name in c.lab.fabric.hosts:
            c.lab.add_fault(name, CommandFault(match="nproc", kind="slow", seconds=0.6))
        await asyncio.sleep(2.0)
        revision = engine.state.revision
        stall = 2.5  # over the probe timeout, three suspect timeouts, the lost timeout
        assert stall < c.settings.lease_ttl_s - 2  # the term outlives it
        asyncio.get_running_loop().call_soon(time.sleep, stall)
        await asyncio.sleep(stall * 2)
        assert engine.ctx.watch.stalls >= 1
        assert engine.leading
        changed = [
            f"{e.node}: {e.health.value}"
            async for r, e in c.store.read_all(from_revision=revision + 1)
            if isinstance(e, NodeHealthChanged)
        ]
        assert changed == []
