"""The orchestrator is the one cut off (safety rule 7): when it loses its links to
every node, or sits on the minority side of a network split, it raises the
isolation alert and powers nothing off; when the links return, everything is as
before. And no evidence is not evidence of death: a node cut off from us that no
reachable DRBD peer can vouch for is unknown, never fenced.

The split test fails without the strict majority, the no-peer test without the
no-evidence rule; the cut-off-from-all test holds while either stands."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from events.ids import NodeName
from events.model import AlertRaised, NodeFlagsSet, NodeHealth
from simulators.lab import HostConfig
from tests.support.cluster.cluster_harness import Cluster, cluster, eid, instances

ISOLATED = "orchestrator-isolated"


def fence_events(c: Cluster) -> list[str]:
    assert c.engine is not None
    return [
        f"{n}: {o.health.value}"
        for n, o in sorted(c.engine.state.observed.items())
        if o.health in (NodeHealth.LOST, NodeHealth.FENCED)
    ]


async def hold_and_check(c: Cluster, seconds: float) -> None:
    """For `seconds`: every node stays powered, none is declared lost or fenced."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        assert all(h.powered for h in c.lab.fabric.hosts.values()), "a node was powered off"
        assert not fence_events(c), fence_events(c)
        await asyncio.sleep(0.1)


async def recover(c: Cluster) -> None:
    for name in c.lab.fabric.hosts:
        await c.lab.heal_partition(name)
    c.lab.fabric.cut_pairs.clear()
    c.lab.fabric.tick()
    assert c.engine is not None
    engine = c.engine
    await c.wait_for(
        "every node online",
        lambda: all(o.health == NodeHealth.ONLINE for o in engine.state.observed.values()),
        timeout=30,
    )
    await c.wait_for("isolation alert cleared", lambda: ISOLATED not in engine.state.alerts)
    await c.wait_for("converged", c.converged, timeout=60)
    for name in engine.state.desired.instances:
        assert len(c.running_on(name)) == 1


async def test_cut_off_from_every_node_fences_nothing(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(8))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        running = {n: c.running_on(n) for n in engine.state.desired.instances}
        # The orchestrator's uplink fails: the nodes keep running and replicating
        # to each other, and the fence network still works.
        for name in c.lab.fabric.hosts:
            await c.lab.partition(name, from_orchestrator=True, from_peers=False)
        await c.wait_for("isolation alert", lambda: ISOLATED in engine.state.alerts, timeout=20)
        assert "reaches 0 of 4" in engine.state.alerts[ISOLATED].message
        await hold_and_check(c, c.settings.lost_timeout_s * 3 + 2)  # type: ignore[operator]
        assert {n: c.running_on(n) for n in running} == running
        # One node answers again (1 of 4, still no majority): the raised alert keeps
        # its message rather than appending an event for every new count.
        await c.lab.heal_partition("node1")
        await hold_and_check(c, c.settings.lost_timeout_s * 2)  # type: ignore[operator]
        assert "reaches 0 of 4" in engine.state.alerts[ISOLATED].message
        await recover(c)
        assert {n: c.running_on(n) for n in running} == running
        raised = [
            e
            async for _, e in c.store.read_all()
            if isinstance(e, AlertRaised) and e.alert == ISOLATED
        ]
        assert len(raised) == 1, [e.message for e in raised]


async def test_on_the_minority_side_of_a_split_fences_nothing(tmp_path: Path) -> None:
    hosts = [HostConfig(name=f"node{i}") for i in range(1, 6)]
    async with cluster(tmp_path, hosts=hosts) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(10))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        near, far = ["node1", "node2"], ["node3", "node4", "node5"]
        # Some of the far side's disks are mirrored to the near side, so the near
        # nodes see those links go down: evidence, were we on the majority side.
        assert any(
            {p.primary, p.secondary} & set(near) and {p.primary, p.secondary} & set(far)
            for p in engine.state.placements.values()
        )
        # A switch fails: the orchestrator and node1-2 on one side, node3-5 on the
        # other; DRBD links across the split go down as well.
        for name in far:
            await c.lab.partition(name, from_orchestrator=True, from_peers=False)
            for other in near:
                c.lab.cut_link(name, other)
        await c.wait_for("isolation alert", lambda: ISOLATED in engine.state.alerts, timeout=20)
        message = engine.state.alerts[ISOLATED].message
        assert "reaches 2 of 5" in message and "node3, node4, node5" in message
        await hold_and_check(c, c.settings.lost_timeout_s * 3 + 2)  # type: ignore[operator]
        await recover(c)


async def test_a_node_no_reachable_peer_vouches_for_is_unknown_not_dead(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        # node4 holds no disk: no DRBD peer can say whether it is alive.
        await c.declare(
            [
                NodeFlagsSet(
                    id=eid(), time=time.time(), actor="test", node=NodeName("node4"), drained=True
                )
            ]
        )
        await c.declare_instances(instances(6))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        assert all(
            "node4" not in (p.primary, p.secondary) for p in engine.state.placements.values()
        )
        await c.lab.partition("node4", from_orchestrator=True, from_peers=False)
        await c.wait_for(
            "node4 unknown",
            lambda: engine.state.observed[NodeName("node4")].health == NodeHealth.UNKNOWN,
            timeout=20,
        )
        # The alert is appended right after the health change: wait for it too.
        await c.wait_for(
            "no-evidence alert", lambda: "noevidence:node4" in engine.state.alerts, timeout=5
        )
        assert "not dead" in engine.state.alerts["noevidence:node4"].message
        assert ISOLATED not in engine.state.alerts  # 3 of 4 answer: a majority
        await hold_and_check(c, c.settings.lost_timeout_s * 2)  # type: ignore[operator]
        await recover(c)
        await c.wait_for("alert cleared", lambda: "noevidence:node4" not in engine.state.alerts)
