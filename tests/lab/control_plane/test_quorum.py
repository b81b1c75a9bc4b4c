"""The orchestrator on a three-member etcd. One member lost: the reactors go on
(a killed VM is started again). Quorum lost: writes are refused with a clear
error, the reactors pause, and no command runs on a node (a VM killed meanwhile
stays down, since its restart cannot be recorded first). Quorum back: work
resumes under a new term, and every acknowledged event is still there."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from devtools.local_etcd import LocalEtcdCluster
from events.ids import EventId
from events.model import AlertRaised, NodeHealth
from tests.support.chaos.chaos_checks import node_commands_since
from tests.support.cluster.cluster_harness import cluster, eid, instances


async def test_member_loss_changes_nothing_and_quorum_loss_pauses(tmp_path: Path) -> None:
    async with cluster(tmp_path, etcd_members=3) as c:
        etcd = c.etcd
        assert isinstance(etcd, LocalEtcdCluster)
        await c.declare_nodes()
        await c.declare_instances(instances(6))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        acknowledged: list[EventId] = []

        async def ack(text: str) -> None:
            e = AlertRaised(
                id=eid(),
                time=time.time(),
                actor="test",
                alert=text,
                severity="warning",
                message=text,
            )
            await c.store.append([e])
            acknowledged.append(e.id)

        await ack("before")
        first_term = engine.ctx.term
        name = sorted(engine.state.placements)[0]
        # One member (etcd's own leader) lost: nothing changes.
        leader = etcd.leader()
        assert leader is not None
        leader.kill()
        host = engine.state.placements[name].primary
        c.lab.fabric.kill_vm(host, name)
        await c.wait_for(f"{name} started again", lambda: c.running_on(name) == [host], timeout=30)
        await ack("one member down")
        assert engine.ctx.term == first_term

        # A second member lost: no quorum.
        second = next(m for m in etcd.members if m.running())
        second.kill()
        refused = await c.corral("node", "drain", "node1")
        assert refused.returncode != 0
        assert "a majority of its members" in refused.stderr + refused.stdout
        assert "Traceback" not in refused.stderr
        await asyncio.sleep(1.5)  # commands decided before the loss may finish
        mark = c.lab.fabric.clock()
        other = sorted(engine.state.placements)[1]
        other_host = engine.state.placements[other].primary
        c.lab.fabric.kill_vm(other_host, other)
        await asyncio.sleep(c.settings.lease_ttl_s + 4)
        assert node_commands_since(c.lab.fabric, mark) == []  # the reactors paused
        assert c.running_on(other) == []
        assert all(h.powered for h in c.lab.fabric.hosts.values())

        # The quorum comes back: work resumes, under a new term.
        for m in etcd.members:
            if not m.running():
                m.launch()
        for m in etcd.members:
            m.wait_healthy(timeout=30)
        await engine.wait_leading(timeout=30)
        await c.wait_for(f"{other} started again", lambda: c.running_on(other) != [], timeout=40)
        assert engine.ctx.term is not None and first_term is not None
        assert engine.ctx.term > first_term
        await ack("after")
        stored = {e.id async for _, e in c.store.read_all()}
        assert set(acknowledged) <= stored
        assert all(o.health == NodeHealth.ONLINE for o in engine.state.observed.values())
