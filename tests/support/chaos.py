"""Random fault schedules on the simulated cluster, shared by the hypothesis test
(tests/lab/test_chaos.py) and `make chaos SEEDS=N`. After every step the invariants are
checked on the simulated hosts themselves; at the end every fault is healed and the
cluster must converge with every instance running."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path

from events.ids import EventId
from events.model import AlertRaised
from orchestrator.operations import confirm_node_off
from tests.support.cluster_harness import Cluster, cluster, eid, instances

ACTIONS = (
    "crash",
    "power_on",
    "partition",
    "heal",
    "cut_link",
    "restore_links",
    "kill_vm",
    "restart_orchestrator",
    "break_fence",
    "wait",
)


def check_invariants(c: Cluster) -> None:
    fabric = c.lab.fabric
    names = {vm for h in fabric.hosts.values() for vm in h.vms}
    for name in names:
        running = c.running_on(name)
        assert len(running) <= 1, f"{name} runs on {running}"
    for res in {r for h in fabric.hosts.values() for r in h.copies}:
        prim = [
            h.name
            for h in fabric.hosts.values()
            if h.powered
            and res in h.copies
            and h.copies[res].up
            and h.copies[res].role == "Primary"
        ]
        if len(prim) == 2:
            assert not fabric.connected(prim[0], res), f"{res} primary on connected {prim}"


@dataclass
class Schedule:
    seed: int
    steps: list[tuple[str, int]]


def make_schedule(seed: int, length: int = 10) -> Schedule:
    rng = random.Random(seed)
    return Schedule(seed, [(rng.choice(ACTIONS), rng.randrange(1000)) for _ in range(length)])


async def run_schedule(tmp: Path, steps: list[tuple[str, int]]) -> None:
    async with cluster(tmp) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(8))
        await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        acknowledged: list[EventId] = []
        down: str | None = None  # at most one node down (N+1 promise)
        nodes = sorted(c.lab.fabric.hosts)
        for action, pick in steps:
            node = nodes[pick % len(nodes)]
            if action == "crash" and down is None:
                await c.lab.crash(node)
                down = node
            elif action == "power_on" and down is not None:
                await c.lab.power_on(down)
                down = None
            elif action == "partition" and down is None:
                await c.lab.partition(node, from_orchestrator=True, from_peers=False)
            elif action == "heal":
                for n in nodes:
                    await c.lab.heal_partition(n)
            elif action == "cut_link":
                other = nodes[(pick + 1) % len(nodes)]
                c.lab.cut_link(node, other)
            elif action == "restore_links":
                c.lab.fabric.cut_pairs.clear()
                c.lab.fabric.tick()
            elif action == "kill_vm":
                host = c.lab.fabric.hosts[node]
                if host.vms:
                    c.lab.fabric.kill_vm(node, sorted(host.vms)[pick % len(host.vms)])
            elif action == "restart_orchestrator":
                await c.stop_engine()
                check_invariants(c)
                await c.start_engine()
            elif action == "break_fence" and c.engine is not None:
                # A lost node whose agent fails: a person vouches for it after a while.
                lost = [n for n, o in c.engine.state.observed.items() if o.health.value == "lost"]
                for n in lost:
                    await confirm_node_off(
                        c.store,
                        c.engine.state,
                        node=n,
                        actor="chaos",
                        reason="checked the PDU by hand",
                    )
            # An acknowledged write, to prove none is lost across restarts.
            e = AlertRaised(
                id=eid(),
                time=time.time(),
                actor="chaos",
                alert=f"chaos-{pick}",
                severity="warning",
                message=action,
            )
            await c.store.append([e])
            acknowledged.append(e.id)
            await asyncio.sleep(0.3 + (pick % 5) * 0.2)
            check_invariants(c)
        # Heal everything; with at most one node down, everything must run again.
        for n in nodes:
            await c.lab.heal_partition(n)
        c.lab.fabric.cut_pairs.clear()
        if down is not None:
            await c.lab.power_on(down)
        c.lab.fabric.tick()
        await c.wait_for("every instance running and in sync", c.converged, timeout=90)
        check_invariants(c)
        stored = {e.id async for _, e in c.store.read_all()}  # type: ignore[misc]
        assert set(acknowledged) <= stored
