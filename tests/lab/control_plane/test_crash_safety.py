"""Kill the orchestrator at many points during operations and start it again from
the event log: every run converges, never two running copies of a VM, never two
DRBD primaries outside a live migration. The engine is stopped by cancelling all
its tasks wherever they are (in-flight SSH commands may or may not finish on the
node, as with kill -9)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from events.ids import InstanceName
from events.model import InstanceDeclared, InstanceRemoved, JobKind
from orchestrator.operations import OperationRefused, submit_job
from reactors.engine import Engine
from tests.support.cluster.cluster_harness import Cluster, cluster, eid, instances


def check_invariants(c: Cluster, *, migrating: set[InstanceName]) -> None:
    for name in {vm for h in c.lab.fabric.hosts.values() for vm in h.vms}:
        running = c.running_on(name)
        assert len(running) <= 1, f"{name} runs on {running}"
    for res in {r for h in c.lab.fabric.hosts.values() for r in h.copies}:
        inst = res.rsplit("-d", 1)[0]
        if inst in migrating:
            continue
        assert len(c.primaries(res)) <= 1, f"{res} primary on {c.primaries(res)}"


async def test_restarts_at_random_points_always_converge(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(6))
        await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        extra = 100
        for round_no in range(8):
            assert c.engine is not None
            state = c.engine.state
            names = sorted(state.desired.instances)
            op = rng.choice(["migrate", "failover", "replace", "create", "remove"])
            target = InstanceName(rng.choice(names))
            try:
                if op == "migrate":
                    await submit_job(
                        c.store, state, kind=JobKind.INSTANCE_MIGRATE, target=target, actor="chaos"
                    )
                elif op == "failover":
                    await submit_job(
                        c.store, state, kind=JobKind.INSTANCE_FAILOVER, target=target, actor="chaos"
                    )
                elif op == "replace":
                    await submit_job(
                        c.store,
                        state,
                        kind=JobKind.INSTANCE_REPLACE_DISKS,
                        target=target,
                        actor="chaos",
                    )
                elif op == "create":
                    spec = instances(1)[0]
                    from dataclasses import replace

                    spec = replace(spec, name=InstanceName(f"new{extra}"))
                    extra += 1
                    await c.declare(
                        [InstanceDeclared(id=eid(), time=time.time(), actor="chaos", spec=spec)]
                    )
                else:
                    await c.declare(
                        [
                            InstanceRemoved(
                                id=eid(), time=time.time(), actor="chaos", instance=target
                            )
                        ]
                    )
            except OperationRefused:
                pass
            # Crash somewhere in the middle of the work.
            import asyncio

            await asyncio.sleep(rng.uniform(0.0, 0.8))
            migrating = {InstanceName(target)} if op == "migrate" else set()
            check_invariants(c, migrating=migrating)
            await c.stop_engine()
            check_invariants(c, migrating=migrating)
            engine = await c.start_engine()

            def settled(engine: Engine = engine) -> bool:
                return c.converged() and all(
                    j.status in ("success", "error", "canceled") for j in engine.state.jobs.values()
                )

            await c.wait_for(
                f"round {round_no} ({op} {target}) converged with no job left running",
                settled,
                timeout=60,
            )
            check_invariants(c, migrating=set())
            # nothing left behind for removed instances
            state = c.engine.state  # type: ignore[union-attr]
            for h in c.lab.fabric.hosts.values():
                for vol in h.volumes:
                    inst = vol.rsplit("-d", 1)[0]
                    p = state.placements.get(InstanceName(inst))
                    assert p is not None and h.name in (p.primary, p.secondary), (
                        f"orphan {vol} on {h.name}"
                    )
