"""Reactors against a simulated 4-node cluster over real SSH and a real etcd:
instances come up DRBD-mirrored and running; the checks read the simulated hosts."""

from __future__ import annotations

from pathlib import Path

from events.ids import InstanceName
from tests.support.cluster.cluster_harness import cluster, instances


async def test_instances_come_up_mirrored_and_running(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        specs = instances(12)
        await c.declare_instances(specs)
        engine = await c.start_engine()
        await c.wait_for("all instances converged", c.converged, timeout=90)
        state = engine.state
        for spec in specs:
            placement = state.placements[spec.name]
            assert placement.primary != placement.secondary
            assert c.running_on(spec.name) == [placement.primary]
            res = f"{spec.name}-d0"
            assert c.primaries(res) == [placement.primary]
            for node in (placement.primary, placement.secondary):
                assert c.lab.host(node).copies[res].disk == "UpToDate"
        # every placement is explained in the log
        assert all(state.placements[InstanceName(s.name)].kind == "initial" for s in specs)
