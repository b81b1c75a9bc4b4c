"""A job that drives an instance itself (a live migration inside a node job)
holds it, and the instance workers keep off it meanwhile: with the secondary's
copy made Primary the way a migration does, no reconcile pass demotes it while
held; once let go, the workers converge it again. Checked on the simulated
hosts (real etcd, hosts over SSH, the engine)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from events.ids import NodeName
from reactors.plans.steps import Step, StepKind, disk_configs
from tests.support.cluster.cluster_harness import cluster, instances


async def test_held_instance_is_left_alone_until_let_go(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(2))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=90)
        name = sorted(engine.state.placements)[0]
        placement = engine.state.placements[name]
        p, s = placement.primary, placement.secondary
        assert s is not None
        configs = disk_configs(state=engine.state, instance=name, placement=placement)
        resource = f"{name}-d0"
        async with engine.workers.hold(name):
            # what a live migration does before it starts the incoming VM
            for cfg in configs:
                for node in (p, s):
                    step = Step(kind=StepKind.DRBD_DUAL_PRIMARY, node=node, instance=name, disk=cfg)
                    assert (await engine.ctx.nodes.execute(step)).ok
                step = Step(kind=StepKind.DRBD_PRIMARY, node=s, instance=name, disk=cfg)
                assert (await engine.ctx.nodes.execute(step)).ok
            await engine.prober.probe(NodeName(s))
            assert c.lab.host(s).copies[resource].role == "Primary"
            # passes are asked for (and the periodic resync runs) but none acts
            for _ in range(6):
                engine.workers.mark(name)
                await asyncio.sleep(0.5)
            assert c.lab.host(s).copies[resource].role == "Primary"
            assert not c.converged()
        # let go: the workers put the secondary back to Secondary
        await c.wait_for(
            "secondary demoted again",
            lambda: c.lab.host(s).copies[resource].role == "Secondary",
            timeout=60,
        )
        await c.wait_for("converged again", c.converged, timeout=60)
        assert c.running_on(name) == [p]
