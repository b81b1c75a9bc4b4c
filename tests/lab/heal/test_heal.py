"""Self-healing on the simulated cluster: a crashed node is fenced and its
instances come back on their secondaries, then get new secondaries; a node cut off
only from the orchestrator is left alone; a failing fence agent blocks failover
until a person confirms the node is off."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from events.ids import InstanceName
from events.model import NodeHealth
from events.specs import ClusterPolicy
from tests.support.cluster.cluster_harness import cluster, instances


async def test_crashed_node_is_fenced_failed_over_and_reprotected(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(12))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        victim = "node1"
        hit = sorted(n for n, p in engine.state.placements.items() if p.primary == victim)
        seconded = sorted(n for n, p in engine.state.placements.items() if p.secondary == victim)
        assert hit and seconded
        crashed_at = time.monotonic()
        await c.lab.crash(victim)
        await c.wait_for(
            "every primary of the dead node running on its former secondary",
            lambda: all(c.running_on(n) and c.running_on(n)[0] != victim for n in hit),
            timeout=30,
        )
        back_in = time.monotonic() - crashed_at
        assert back_in < c.settings.lost_timeout_s + 5  # type: ignore[operator]
        state = engine.state
        assert state.observed[victim].health == NodeHealth.FENCED  # type: ignore[index]
        await c.wait_for("redundancy rebuilt", lambda: c.converged(), timeout=60)
        state = engine.state
        for name in hit + seconded:
            p = state.placements[name]
            assert victim not in (p.primary, p.secondary)
            for node in (p.primary, p.secondary):
                assert c.lab.host(node).copies[f"{name}-d0"].disk == "UpToDate"
            assert len(c.running_on(name)) == 1
        # The chain is in the log: lost -> fenced -> placed (failover) -> started.
        placed = state.placements[hit[0]]
        assert placed.kind in ("failover", "heal")

        # The node comes back: its stale copies are cleaned up, nothing restarts there.
        await c.lab.power_on(victim)
        await c.wait_for(
            "node back online",
            lambda: engine.state.observed[victim].health == NodeHealth.ONLINE,  # type: ignore[index]
            timeout=30,
        )
        host = c.lab.host(victim)
        await c.wait_for(
            "stale copies removed", lambda: not host.copies and not host.volumes, timeout=30
        )
        assert not host.vms


async def test_node_partitioned_only_from_us_is_not_fenced(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(8))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        node = "node2"
        running = sorted(n for n, p in engine.state.placements.items() if p.primary == node)
        await c.lab.partition(node, from_orchestrator=True, from_peers=False)
        await c.wait_for(
            "partition detected",
            lambda: engine.state.observed[node].health == NodeHealth.PARTITIONED,  # type: ignore[index]
            timeout=20,
        )
        await c.wait_for("alert", lambda: f"partitioned:{node}" in engine.state.alerts)
        import asyncio

        await asyncio.sleep(2.0)
        assert c.lab.host(node).powered  # never fenced
        for name in running:
            assert c.running_on(name) == [node]  # its VMs keep running, nowhere else
        await c.lab.heal_partition(node)
        await c.wait_for(
            "back online",
            lambda: engine.state.observed[node].health == NodeHealth.ONLINE,  # type: ignore[index]
            timeout=20,
        )
        await c.wait_for("alert cleared", lambda: f"partitioned:{node}" not in engine.state.alerts)


async def test_failed_fence_blocks_failover_until_confirm_off(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(6))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        node = "node3"
        hit = sorted(n for n, p in engine.state.placements.items() if p.primary == node)
        assert hit
        # The node dies, and its fence device does not answer.
        c.lab.fabric.hosts[node]
        spec = engine.state.desired.nodes[node]  # type: ignore[index]
        assert spec.fence is not None
        await c.lab.crash(node)
        broken = dict(spec.fence.options)
        broken["ipport"] = "1"  # nothing listens there: the agent fails
        from dataclasses import replace

        from events.model import NodeUpdated
        from tests.support.cluster.cluster_harness import eid

        await c.declare(
            [
                NodeUpdated(
                    id=eid(),
                    time=time.time(),
                    actor="test",
                    spec=replace(
                        spec, fence=replace(spec.fence, options=tuple(sorted(broken.items())))
                    ),
                )
            ]
        )
        await c.wait_for(
            "fence failures recorded",
            lambda: engine.state.observed[node].fence_failures >= 1,  # type: ignore[index]
            timeout=20,
        )
        assert engine.state.observed[node].health == NodeHealth.LOST  # type: ignore[index]
        await c.wait_for("fence alert", lambda: f"fence:{node}" in engine.state.alerts)
        for name in hit:
            assert c.running_on(name) == []  # no failover without a fence
        no_reason = await c.corral("node", "confirm-off", node)
        assert no_reason.returncode == 1 and "reason" in no_reason.stderr
        for name in hit:
            assert c.running_on(name) == []
        vouched = await c.corral(
            "node",
            "confirm-off",
            node,
            "--reason",
            "pulled the power cord myself",
            identity="carol",
        )
        assert vouched.returncode == 0, vouched.stderr
        await c.wait_for(
            "failover after confirm-off", lambda: all(c.running_on(n) for n in hit), timeout=30
        )
        assert engine.state.observed[node].fenced_by == "user:carol"  # type: ignore[index]


async def test_a_vm_that_keeps_crashing_is_restarted_a_bounded_number_of_times(
    tmp_path: Path,
) -> None:
    policy = ClusterPolicy(restart_limit=3, restart_backoff_s=0.3, restart_window_s=120)
    async with cluster(tmp_path) as c:
        await c.declare_nodes(policy=policy)
        await c.declare_instances(instances(1))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        name = "vm000"
        primary = engine.state.placements[InstanceName(name)].primary
        # It crashes twice: the watcher starts it again each time, after a backoff.
        for crash in (1, 2):
            c.lab.fabric.kill_vm(primary, name)
            await c.wait_for(
                f"restart after crash {crash}",
                lambda n=crash: (
                    len(engine.state.vm_starts.get(InstanceName(name), ())) == n + 1
                    and c.running_on(name) == [primary]
                ),
                timeout=30,
            )
        # The third crash spends the budget (3 starts): it stays down, with an alert.
        c.lab.fabric.kill_vm(primary, name)
        await c.wait_for(
            "ERROR_down alert", lambda: f"error-down:{name}" in engine.state.alerts, timeout=30
        )
        await asyncio.sleep(1.0)
        assert c.running_on(name) == []
        listed = await c.corral("instance", "list", "--json")
        row = next(r for r in json.loads(listed.stdout) if r["name"] == name)
        assert row["status"] == "ERROR_down"
        # A person starts it: the budget is renewed, it runs, the alert ends.
        started = await c.corral("instance", "start", name, "--wait")
        assert started.returncode == 0, started.stdout + started.stderr
        assert c.running_on(name) == [primary]
        await c.wait_for(
            "alert cleared", lambda: f"error-down:{name}" not in engine.state.alerts, timeout=10
        )
