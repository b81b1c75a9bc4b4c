"""A second node lost before re-protection finished: an instance failed over to
its secondary B, whose new secondary C was still syncing from B when B died too,
has no UpToDate copy left. It stays down, C's Inconsistent copy is never promoted
nor started there (safety rule 2), and corral says why, naming where its data is;
when B comes back the instance runs there again and that reason ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

from events.ids import InstanceName, NodeName
from events.model import NodeHealth
from simulators.lab import HostConfig
from tests.support.cluster.cluster_harness import Cluster, cluster, instances


def _syncing_elsewhere(c: Cluster, name: InstanceName, a: NodeName, b: NodeName) -> bool:
    """Failed over from A to B, and B syncing a new secondary (not A) right now."""
    assert c.engine is not None
    p = c.engine.state.placements[name]
    if c.running_on(name) != [b] or p.primary != b or p.secondary in (a, b):
        return False
    copy = c.lab.host(p.secondary).copies.get(f"{name}-d0")
    return (
        copy is not None
        and copy.disk == "Inconsistent"
        and copy.sync_done_mib > 0
        and c.lab.fabric.connected(p.secondary, f"{name}-d0")
    )


async def test_second_loss_during_resync_is_reported_and_never_promoted(tmp_path: Path) -> None:
    # Five nodes: with one fenced, fencing a second still leaves a majority up.
    hosts = [HostConfig(name=f"node{i}") for i in range(1, 6)]
    async with cluster(tmp_path, hosts=hosts) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(5))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        name = InstanceName("vm000")  # 10 GiB
        a, b = engine.state.placements[name].primary, engine.state.placements[name].secondary
        # New copies sync slowly from now on (10 GiB at 20 MiB/s: minutes).
        c.lab.fabric.sync_rate_mib_s = 20.0
        await c.lab.crash(a)
        await c.wait_for(
            "failed over to B, a new secondary syncing from B",
            lambda: _syncing_elsewhere(c, name, a, b),
            timeout=60,
        )
        new = engine.state.placements[name].secondary
        await c.lab.crash(b)
        await c.wait_for(
            "B fenced",
            lambda: engine.state.observed[b].health == NodeHealth.FENCED,  # type: ignore[index]
            timeout=60,
        )
        key = f"nodedown:{name}"
        await c.wait_for("the reason", lambda: key in engine.state.alerts, timeout=30)
        message = engine.state.alerts[key].message
        assert f"its data is only on {b}" in message, message
        assert f"{name}-d0 on {new} is Inconsistent, its sync from {b} not finished" in message
        # Never promoted nor started on the Inconsistent copy, while the others heal.
        await asyncio.sleep(3.0)
        assert c.running_on(name) == []
        copy = c.lab.host(new).copies[f"{name}-d0"]
        assert copy.disk == "Inconsistent" and copy.role == "Secondary"
        assert engine.state.placements[name].primary == b
        # B comes back: the instance runs there again, and the reason ends.
        c.lab.fabric.sync_rate_mib_s = 200_000.0
        await c.lab.power_on(b)
        await c.wait_for("running on B again", lambda: c.running_on(name) == [b], timeout=60)
        await c.wait_for("the reason ended", lambda: key not in engine.state.alerts, timeout=30)
        await c.wait_for("C in sync", lambda: c.converged([name]), timeout=60)
