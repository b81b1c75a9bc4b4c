"""Heal at size: 40 simulated nodes in 4 racks (failure domains: an instance's
primary and secondary never share a rack) with 2,000 running instances, the
hosts simulated in their own process. On the same cluster, one after another:

1. one node crashed (about 50 primaries): suspect, lost, fenced, each instance
   back on its former secondary (p50/p99/max after the crash; target: the lost
   timeout + 5 s), redundancy rebuilt and the data resynced for it;
2. two nodes of different racks crashed 30 s apart: the same, per node;
3. the rest of one rack crashed at once: what can be recovered is, in the time
   the healer's rules allow (majority evidence, one fence at a time by default:
   a rack heals node by node, slower by design); what is not back by the
   deadline is listed with the reason its plan gives.

The healer's rules are the product's; they are measured, not bent."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.profiling import Sampler
from events.ids import InstanceName
from events.model import Event, NodeDeclared, PolicySet
from events.specs import ClusterPolicy
from events.state import ClusterState, Placement
from orchestrator.heal_timeline import build_timeline, percentile
from reactors.plans.instance import plan_instance
from simulators.lab import HostConfig
from tests.support.cluster_harness import FAST, Cluster, eid, instances
from tests.support.remote_lab import RemoteLab, remote_cluster

NODES = int(os.environ.get("CORRAL_BENCH_HEAL_NODES", "40"))
INSTANCES = int(os.environ.get("CORRAL_BENCH_HEAL_INSTANCES", "2000"))
RACKS = 4
# As the heal bench: probes every 0.5 s, FAST's timeouts (lost after 2 s); a 10 s
# leader lease (a busy neighbour on this shared machine can stall the process).
SETTINGS = replace(FAST, probe_interval_s=0.5, resync_interval_s=5.0, lease_ttl_s=10)
RACK_DEADLINE_S = 600.0


def rack_of(node: str) -> str:
    return f"rack:r{(int(node.removeprefix('node')) - 1) % RACKS + 1}"


async def _declare(c: Cluster) -> None:
    events: list[Event] = [
        PolicySet(
            id=eid(),
            time=time.time(),
            actor="bench",
            cluster_name="lab",
            policy=ClusterPolicy(failure_domain_prefixes=("rack:",)),
        )
    ]
    for spec in c.node_specs():
        tagged = replace(spec, tags=frozenset({rack_of(spec.name)}))
        events.append(NodeDeclared(id=eid(), time=time.time(), actor="bench", spec=tagged))
    await c.declare(events)


def _running(status: dict[str, Any]) -> dict[str, str]:
    """Instance -> the powered host the lab says runs it."""
    out = {}
    for node, h in status.items():
        if h["power"] == "on":
            for vm in h["vms"]:
                out[vm] = node
    return out


def _resynced_mib(before: dict[InstanceName, Placement], state: ClusterState) -> int:
    """Data copied to build new copies: each instance's disk size for every node
    of its placement that held no copy before."""
    total = 0
    for name, p in state.placements.items():
        old = before.get(name)
        had = {old.primary, old.secondary} if old else set()
        new = {p.primary, p.secondary} - had
        spec = state.desired.instances.get(name)
        if spec is not None:
            total += spec.disk_mib * len(new)
    return total


async def _lose(
    c: Cluster,
    lab: RemoteLab,
    victims: list[tuple[float, str]],
    *,
    deadline_s: float,
) -> dict[str, Any]:
    """Crash `victims` (delay after the first crash, node); wait until every
    instance whose primary was on them runs again, redundancy is rebuilt, or the
    deadline passes. Figures relative to each node's own crash."""
    engine = c.engine
    assert engine is not None
    before = dict(engine.state.placements)
    events_before = engine.state.event_count
    hit = {n: [i for i, p in before.items() if p.primary == n] for _, n in victims}
    crashed_at: dict[str, float] = {}
    t0 = time.time()
    for delay, node in victims:
        await asyncio.sleep(max(0.0, t0 + delay - time.time()))
        crashed_at[node] = time.time()
        await lab.crash(node)
    everyone = [i for names in hit.values() for i in names]
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        running = _running(await lab.status())
        if all(i in running for i in everyone):
            break
        await asyncio.sleep(1.0)
    all_back_at = time.time()
    reprotected_at = None
    while time.time() < deadline:
        if c.converged():
            reprotected_at = time.time()
            break
        await asyncio.sleep(2.0)
    events = [x async for x in c.store.read_all(from_revision=0)]
    state = engine.state
    per_node = {}
    back_all: list[float] = []
    for node, names in hit.items():
        tl = build_timeline(node=node, crashed_at=crashed_at[node], events=events)
        back = tl.back_times()
        back_all += back
        per_node[node] = {
            "primaries": len(names),
            "suspect_s": round((tl.suspect_at or 0) - crashed_at[node], 2)
            if tl.suspect_at
            else None,
            "lost_s": round(tl.lost_at - crashed_at[node], 2) if tl.lost_at else None,
            "fenced_s": round(tl.fenced_at - crashed_at[node], 2) if tl.fenced_at else None,
            "back": len(back),
            "back_p50_s": round(percentile(back, 50), 2) if back else None,
            "back_p99_s": round(percentile(back, 99), 2) if back else None,
            "back_max_s": round(max(back), 2) if back else None,
        }
    running = _running(await lab.status())
    missing = [i for i in everyone if i not in running]
    reasons = Counter(
        "; ".join(plan_instance(state=state, instance=i, now=time.time()).waiting) or "(no reason)"
        for i in missing
    )
    first = min(crashed_at.values())
    return {
        "nodes_lost": [n for _, n in victims],
        "primaries_hit": len(everyone),
        "per_node": per_node,
        "back_p50_s": round(percentile(back_all, 50), 2) if back_all else None,
        "back_p99_s": round(percentile(back_all, 99), 2) if back_all else None,
        "back_max_s": round(max(back_all), 2) if back_all else None,
        "all_back_s": round(all_back_at - first, 1) if not missing else None,
        "not_back": len(missing),
        "not_back_reasons": dict(reasons.most_common(5)),
        "reprotected_s": round(reprotected_at - first, 1) if reprotected_at else None,
        "resynced_gib": round(_resynced_mib(before, state) / 1024, 1),
        "events": state.event_count - events_before,
    }


async def _run(tmp: Path) -> dict[str, Any]:
    hosts = [
        HostConfig(name=f"node{i + 1:02d}", memory_mib=96 * 1024, disk_mib=4 * 1024 * 1024, cpus=32)
        for i in range(NODES)
    ]
    async with remote_cluster(tmp, hosts=hosts, settings=SETTINGS, sync_rate_mib_s=10_000_000) as (
        c,
        lab,
    ):
        await _declare(c)
        await c.declare_instances(instances(INSTANCES, memory=(512, 1024)))
        engine = await c.start_engine()
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(3)
            if len(_running(await lab.status())) >= INSTANCES and c.converged():
                break
            if time.monotonic() - t0 > 2400:
                raise TimeoutError(f"not converged\n{c.explain()}")
        out: dict[str, Any] = {"converge_s": round(time.monotonic() - t0, 1)}
        await asyncio.sleep(5)
        policy = engine.state.desired.policy
        out["lost_timeout_s"] = SETTINGS.lost_timeout_s or policy.lost_timeout_s
        # The node whose primaries are closest to 2,000 / 40.
        per = Counter(p.primary for p in engine.state.placements.values())
        first = min(sorted(per), key=lambda n: abs(per[n] - INSTANCES / NODES))
        sampler = Sampler(os.getpid(), tmp / "orchestrator.raw")
        out["one_node"] = await _lose(c, lab, [(0.0, first)], deadline_s=600)
        out["profile_one_node"] = sampler.stop()
        # Two nodes of other racks, 30 s apart.
        racks = sorted({rack_of(n) for n in per} - {rack_of(first)})
        pick = [next(n for n in sorted(per) if rack_of(n) == r and n != first) for r in racks[:2]]
        out["two_nodes"] = await _lose(c, lab, [(0.0, pick[0]), (30.0, pick[1])], deadline_s=600)
        # The rest of the first node's rack, at once.
        rack = [n for n in sorted(per) if rack_of(n) == rack_of(first) and n != first]
        out["rack"] = await _lose(c, lab, [(0.0, n) for n in rack], deadline_s=RACK_DEADLINE_S)
        out["rack"]["rack"] = rack_of(first)
        return out


def _row(label: str, r: dict[str, Any], target: Any) -> list[Any]:
    return [
        label,
        r["primaries_hit"],
        r["back_p50_s"],
        r["back_p99_s"],
        r["back_max_s"],
        target,
        r["not_back"],
        r["reprotected_s"],
        r["resynced_gib"],
    ]


def run() -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(_run(Path(tmp)))
    target = round(out["lost_timeout_s"] + 5, 1)
    table: list[list[Any]] = [
        [
            f"{NODES} nodes / {INSTANCES} instances",
            "primaries",
            "back p50 s",
            "p99",
            "max",
            "target max",
            "not back",
            "re-protected s",
            "resynced GiB",
        ],
        _row("one node crashed", out["one_node"], target),
        _row("two nodes, other racks, 30 s apart", out["two_nodes"], f"{target} each"),
        _row(f"a rack ({len(out['rack']['nodes_lost'])} nodes) at once", out["rack"], "-"),
    ]
    for label in ("one_node", "two_nodes", "rack"):
        for node, r in out[label]["per_node"].items():
            table.append(
                [
                    f"  {label} {node}: suspect/lost/fenced s",
                    r["primaries"],
                    r["back_p50_s"],
                    r["back_p99_s"],
                    r["back_max_s"],
                    f"{r['suspect_s']}/{r['lost_s']}/{r['fenced_s']}",
                    r["primaries"] - r["back"],
                    "",
                    "",
                ]
            )
    # Events of one node loss (crash to redundancy rebuilt), for the log's budget.
    out["events_node_loss"] = out["one_node"]["events"]
    return {**out, "table": table}
