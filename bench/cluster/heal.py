"""Heal timeline on a simulated 20-node cluster with 400 running instances (the
simulated hosts in a process of their own, as `corral sim up` runs them): one
node crashed; detect, fence, first/last instance back on its former secondary
(p50/p99/max), and redundancy rebuilt. Lost timeout as configured (FAST: 2 s).

Two rows from one run: an ordinary crash (the orchestrator is elsewhere), and the
crash of the node the leader runs on: the leader is a real `corral serve` process
"on" node01, killed with SIGKILL as node01 crashes, and the standby (this
process's engine, with the same settings as the ordinary row) must first wait for
the leader's lease to expire. Its target: all node01's primaries back within
lease TTL + lost timeout + 5 s."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from devtools.orchestrators import ServeProcess, serve_env
from events.election import read_leadership
from events.ids import NodeName
from events.specs import ClusterPolicy
from orchestrator.heal_timeline import build_timeline, percentile
from orchestrator.logs import configure_logging
from reactors.engine import Engine
from simulators.lab import HostConfig
from tests.support.cluster.cluster_harness import FAST, Cluster, instances
from tests.support.cluster.remote_lab import RemoteLab, remote_cluster

# 20 nodes: probe each every 0.5 s (FAST's 0.2 s makes the simulator itself the
# bottleneck on 2 cores); timeouts as in FAST.
SETTINGS = replace(FAST, probe_interval_s=0.5, resync_interval_s=5.0)
VICTIM = "node01"
LEADER = f"orch-{VICTIM}"


async def _leader_on_victim(c: Cluster) -> tuple[ServeProcess, Engine]:
    """A `corral serve` "on" the victim, leading; then this process's engine as
    its standby."""
    leader = ServeProcess(
        name=LEADER,
        args=(
            "--lab",
            str(c.lab.state_dir / "inventory.json"),
            "--lease-ttl",
            str(SETTINGS.lease_ttl_s),
            "--probe-interval",
            str(SETTINGS.probe_interval_s),
        ),
        env=serve_env(c.etcd.client_env("orchestrator"), cluster="lab"),
        log_path=c.tmp / f"{LEADER}.log",
    )
    leader.start()
    deadline = time.monotonic() + 60
    while True:
        record, _ = await read_leadership(c.store)
        if record is not None and record.member.id == LEADER:
            break
        if time.monotonic() > deadline or not leader.running():
            raise TimeoutError(f"{LEADER} did not lead: {leader.records()[-5:]}")
        await asyncio.sleep(0.2)
    return leader, await c.start_engine(name="orch-node02", lead=False)


async def _running(lab: RemoteLab, names: Sequence[str]) -> int:
    """How many of `names` the lab runs on a powered node."""
    status = await lab.status()
    on = {v for h in status.values() if h["power"] == "on" for v in h["vms"]}
    return sum(1 for n in names if n in on)


async def _wait(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def _converge(
    c: Cluster, lab: RemoteLab, engine: Engine, leader: ServeProcess | None
) -> None:
    count = len(engine.state.desired.instances)
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(2)
        done = await _running(lab, sorted(engine.state.desired.instances))
        print(
            f"  converging: {done}/{count} running after {time.monotonic() - t0:.0f}s",
            flush=True,
        )
        if done == count and c.converged():
            return
        if leader is not None and not leader.running():
            raise RuntimeError(f"{LEADER} died: {leader.records()[-5:]}")
        if time.monotonic() - t0 > 1800:
            raise TimeoutError(f"not converged\n{c.explain()}")


async def _run(nodes: int, count: int, *, leader_on_victim: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        hosts = [
            HostConfig(
                name=f"node{i + 1:02d}", memory_mib=64 * 1024, disk_mib=2 * 1024 * 1024, cpus=32
            )
            for i in range(nodes)
        ]
        async with remote_cluster(
            Path(tmp), hosts=hosts, settings=SETTINGS, sync_rate_mib_s=10_000_000
        ) as (c, lab):
            # The policy carries the timeouts too: a `corral serve` takes them from it.
            await c.declare_nodes(
                policy=ClusterPolicy(
                    suspect_timeout_s=SETTINGS.suspect_timeout_s or 0.8,
                    lost_timeout_s=SETTINGS.lost_timeout_s or 2.0,
                )
            )
            await c.declare_instances(instances(count, memory=(512, 1024, 2048)))
            leader: ServeProcess | None = None
            try:
                if leader_on_victim:
                    leader, engine = await _leader_on_victim(c)
                else:
                    engine = await c.start_engine()
                await _converge(c, lab, engine, leader)
                return await _crash(c, lab, engine, leader)
            finally:
                if leader is not None:
                    leader.stop()


async def _crash(
    c: Cluster, lab: RemoteLab, engine: Engine, leader: ServeProcess | None
) -> dict[str, Any]:
    hit = [n for n, p in engine.state.placements.items() if p.primary == VICTIM]
    crashed = time.time()
    if leader is not None:
        leader.kill()  # its node dies with it
    await lab.crash(VICTIM)

    async def all_back() -> bool:
        return await _running(lab, hit) == len(hit)

    async def fenced() -> bool:
        obs = engine.state.observed.get(NodeName(VICTIM))
        return obs is not None and obs.health.value == "fenced"

    async def converged() -> bool:
        return c.converged()

    await _wait("all back", all_back, 600)
    await _wait("fenced", fenced, 60)
    await _wait("re-protected", converged, 1800)
    reprotected = time.time() - crashed
    events = [x async for x in c.store.read_all()]
    tl = build_timeline(node=VICTIM, crashed_at=crashed, events=events)
    back = tl.back_times()
    handover: dict[str, Any] = {}
    if leader is not None:
        # The standby's first term after the crash (on a starved machine it may
        # lose a term and lead again later).
        term = min(t for t, at in engine.term_began.items() if at > crashed)
        handover = {
            "elected_s": round(engine.term_began[term] - crashed, 2),
            "first_reconcile_s": round(engine.first_reconciles[term] - crashed, 2),
            "leader_lease_ttl_s": SETTINGS.lease_ttl_s,
            "standby_terms_after_crash": sum(at > crashed for at in engine.term_began.values()),
        }
    return {
        "leader_on_crashed_node": leader is not None,
        **handover,
        "nodes": len(engine.state.desired.nodes),
        "instances": len(engine.state.desired.instances),
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


PHASES = (
    "suspect_s",
    "lost_s",
    "fenced_s",
    "first_back_s",
    "back_p50_s",
    "back_p99_s",
    "back_max_s",
    "reprotected_s",
)


def run() -> dict[str, Any]:
    # Errors only, with plain tracebacks: structlog's default renders each local
    # variable of every frame (the whole cluster state), on the reactors' loop,
    # for minutes at 400 instances.
    configure_logging(level="error")
    r = asyncio.run(_run(20, 400, leader_on_victim=False))
    lead = asyncio.run(_run(20, 400, leader_on_victim=True))
    bound = SETTINGS.lease_ttl_s + (SETTINGS.lost_timeout_s or 0.0) + 5.0
    lead["target_s"] = bound
    lead["within_target"] = lead["back_max_s"] <= bound
    table: list[list[Any]] = [
        ["phase (s after the crash)", "ordinary crash", "leader's node crashed"]
    ]
    for key in ("elected_s", "first_reconcile_s"):
        table.append([f"new leader: {key.removesuffix('_s')}", "-", lead[key]])
    for key in PHASES:
        table.append([key.removesuffix("_s"), r[key], lead[key]])
    table.append(
        [
            "(primaries on the dead node)",
            r["primaries_on_dead_node"],
            lead["primaries_on_dead_node"],
        ]
    )
    table.append(
        [
            "(lost timeout / lease TTL)",
            f"{r['lost_timeout_s']} / -",
            f"{lead['lost_timeout_s']} / {lead['leader_lease_ttl_s']}",
        ]
    )
    table.append(
        [
            "(target: all back within)",
            "-",
            f"{bound:g} ({'met' if lead['within_target'] else 'MISSED'})",
        ]
    )
    return {**r, "leader_node": lead, "table": table}
