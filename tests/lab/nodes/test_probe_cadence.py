"""A node is probed an interval after its last probe, whoever asked for it: a node
the workers probe to verify their steps is not probed again at once by its
periodic loop (the probes the simulated host ran are counted), and a node nobody
else probes is still probed every interval and stays online. A node declared
while the orchestrator runs is probed at once."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from pathlib import Path

from events.ids import NodeName
from events.model import NodeDeclared, NodeHealth, PolicySet
from events.specs import ClusterPolicy
from tests.support.cluster.cluster_harness import FAST, cluster, eid

PROBE = re.compile(r"corral-node-helper probe\b")
INTERVAL_S = 1.0
WATCHED_S = 6.0


def probes_since(fabric: object, host: str, since: float) -> int:
    journal = fabric.journal  # type: ignore[attr-defined]
    return sum(1 for at, h, cmd in journal if h == host and at > since and PROBE.search(cmd))


async def test_a_probed_node_is_not_probed_again_within_the_interval(tmp_path: Path) -> None:
    settings = replace(FAST, probe_interval_s=INTERVAL_S, suspect_timeout_s=3.0, lost_timeout_s=8.0)
    async with cluster(tmp_path, settings=settings) as c:
        await c.declare_nodes()
        engine = await c.start_engine()
        busy, idle = NodeName("node1"), NodeName("node2")
        await c.wait_for(
            "nodes online",
            lambda: (
                all(
                    o.health == NodeHealth.ONLINE
                    for n, o in engine.state.observed.items()
                    if n in (busy, idle)
                )
                and {busy, idle} <= set(engine.state.observed)
            ),
            timeout=30,
        )
        since = c.lab.fabric.clock()
        # A worker's verify probe every 0.6 s on one node, for 6 s.
        for _ in range(int(WATCHED_S / 0.6)):
            await engine.prober.probe(busy)
            await asyncio.sleep(0.6)
        asked = int(WATCHED_S / 0.6)
        busy_probes = probes_since(c.lab.fabric, busy, since)
        idle_probes = probes_since(c.lab.fabric, idle, since)
        # Ours, and at most one periodic probe the loop had already begun.
        assert asked <= busy_probes <= asked + 1
        # The other node: one probe an interval (give or take a loaded machine).
        assert WATCHED_S / INTERVAL_S - 2 <= idle_probes <= WATCHED_S / INTERVAL_S + 1
        assert engine.state.observed[busy].health == NodeHealth.ONLINE
        assert engine.state.observed[idle].health == NodeHealth.ONLINE


async def test_a_node_declared_to_a_running_orchestrator_is_probed(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        specs = c.node_specs()
        await c.declare(
            [
                PolicySet(
                    id=eid(),
                    time=time.time(),
                    actor="t",
                    cluster_name="lab",
                    policy=ClusterPolicy(),
                )
            ]
            + [NodeDeclared(id=eid(), time=time.time(), actor="t", spec=s) for s in specs[:-1]]
        )
        engine = await c.start_engine()
        late = specs[-1].name
        await c.wait_for("the first nodes online", lambda: len(engine.state.observed) == 3)
        await asyncio.sleep(1.5)  # the node loop settled, waiting on the map it holds
        assert late not in engine.state.observed
        await c.declare([NodeDeclared(id=eid(), time=time.time(), actor="t", spec=specs[-1])])
        await c.wait_for(
            f"{late} probed and online",
            lambda: (
                late in engine.state.observed
                and engine.state.observed[late].health == NodeHealth.ONLINE
            ),
            timeout=10,
        )
