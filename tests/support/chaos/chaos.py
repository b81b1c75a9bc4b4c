"""Random fault schedules on the simulated cluster, shared by the hypothesis test
(tests/lab/heal/test_chaos.py) and `make chaos SEEDS=N`. Faults hit the nodes (crash,
power, partitions, DRBD link cuts, killed VMs, a fence nobody can run) and the
control plane (the orchestrator cut off from every node or from a majority, the
leader frozen past its lease or killed with a standby waiting, etcd losing a
member, its quorum or its Raft leader, or answering slowly). Two orchestrators
run throughout. After every step the invariants of tests/support/chaos/chaos_checks.py
are checked on the hosts and on the event log; at the end every fault is healed
and the cluster must converge with every instance running and every job done."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from devtools.local_etcd import LocalEtcdCluster
from events.ids import EventId, InstanceName
from events.model import AlertRaised, JobKind
from events.store import EtcdUnavailable
from orchestrator.operations import OperationRefused, confirm_node_off, submit_job
from tests.support.chaos import chaos_control as ctl
from tests.support.chaos.chaos_checks import FenceWatch, check_hosts, check_log, node_commands_since
from tests.support.cluster.cluster_harness import FAST, Cluster, cluster, eid, instances

NODE_FAULTS = (
    "crash",
    "power_on",
    "partition",
    "heal",
    "cut_link",
    "restore_links",
    "kill_vm",
    "restart_orchestrator",
    "break_fence",
    "migrate",
    "wait",
)
CONTROL_FAULTS = (
    "isolate_orchestrator",
    "isolate_from_majority",
    "stall_leader",
    "kill_leader",
    "etcd_member_loss",
    "etcd_quorum_loss",
    "etcd_leader_change",
    "slow_etcd",
)
ACTIONS = NODE_FAULTS + CONTROL_FAULTS
ETCD_FAULTS = frozenset(a for a in CONTROL_FAULTS if "etcd" in a)
SETTINGS = replace(FAST, lease_ttl_s=3)


def check_invariants(c: Cluster) -> None:
    check_hosts(c.lab.fabric)


@dataclass
class Schedule:
    seed: int
    steps: list[tuple[str, int]]


def make_schedule(seed: int, length: int = 10) -> Schedule:
    rng = random.Random(seed)
    return Schedule(seed, [(rng.choice(ACTIONS), rng.randrange(1000)) for _ in range(length)])


@dataclass
class Run:
    """One schedule's run: what it has done to the cluster so far."""

    c: Cluster
    orch: ctl.Orchestrators
    watch: FenceWatch
    nodes: list[str]
    down: str | None = None  # at most one node down (N+1 promise)
    acknowledged: list[EventId] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)

    @property
    def etcd(self) -> LocalEtcdCluster | None:
        return self.c.etcd if isinstance(self.c.etcd, LocalEtcdCluster) else None

    async def step(self, action: str, pick: int) -> bool:
        """Inject `action`; False when it does not apply now."""
        if action in ETCD_FAULTS:
            return await self.etcd_fault(action, pick)
        if action in CONTROL_FAULTS:
            return await self.orchestrator_fault(action, pick)
        return await self.node_fault(action, pick)

    async def node_fault(self, action: str, pick: int) -> bool:
        c, nodes = self.c, self.nodes
        node = nodes[pick % len(nodes)]
        if action == "crash" and self.down is None:
            self.watch.expect_off(node)
            await c.lab.crash(node)
            self.down = node
        elif action == "power_on" and self.down is not None:
            await c.lab.power_on(self.down)
            self.down = None
        elif action == "partition" and self.down is None:
            await c.lab.partition(node, from_orchestrator=True, from_peers=False)
        elif action == "heal":
            await self.heal_network()
            if self.etcd is not None:
                await ctl.restore_members(self.etcd)
        elif action == "cut_link":
            c.lab.cut_link(node, nodes[(pick + 1) % len(nodes)])
        elif action == "restore_links":
            c.lab.fabric.cut_pairs.clear()
            c.lab.fabric.tick()
        elif action == "kill_vm":
            host = c.lab.fabric.hosts[node]
            if not host.vms:
                return False
            c.lab.fabric.kill_vm(node, sorted(host.vms)[pick % len(host.vms)])
        elif action == "restart_orchestrator":
            if not await self.orch.stop_leader():
                return False
            check_invariants(c)
            await self.orch.add()
        elif action == "break_fence" and c.engine is not None:
            # A lost node whose agent fails: a person vouches for it after a while.
            state = c.engine.state
            lost = [n for n, o in state.observed.items() if o.health.value == "lost"]
            for n in lost:
                await confirm_node_off(
                    c.store, state, node=n, actor="chaos", reason="checked the PDU by hand"
                )
            return bool(lost)
        elif action == "migrate":
            return await self.migrate(pick)
        elif action != "wait":
            return False
        return True

    async def migrate(self, pick: int) -> bool:
        """A live migration job (its steps must run once each)."""
        lead = self.orch.leader()
        if lead is None:
            return False
        names = sorted(lead.state.placements)
        try:
            await submit_job(
                self.c.store,
                lead.state,
                kind=JobKind.INSTANCE_MIGRATE,
                target=InstanceName(names[pick % len(names)]),
                actor="chaos",
            )
        except (OperationRefused, EtcdUnavailable):
            return False
        return True

    async def orchestrator_fault(self, action: str, pick: int) -> bool:
        c = self.c
        if action == "isolate_orchestrator":
            # Its uplink fails: the nodes keep running and replicating.
            for n in self.nodes:
                await c.lab.partition(n, from_orchestrator=True, from_peers=False)
        elif action == "isolate_from_majority":
            # A switch fails: the orchestrator and one node on one side, the
            # others (a majority) on the other; DRBD links across go down too.
            near = self.nodes[pick % len(self.nodes)]
            for n in self.nodes:
                if n != near:
                    await c.lab.partition(n, from_orchestrator=True, from_peers=False)
                    c.lab.cut_link(n, near)
        elif action == "stall_leader":
            try:  # after a kill or a restart, the standby leads once the lease ends
                await self.orch.wait_leader(timeout=c.settings.lease_ttl_s + 5)
            except AssertionError:
                return False
            self.orch.stall(c.settings.lease_ttl_s + 1.5)
        elif action == "kill_leader":
            return await self.orch.kill_leader()
        return True

    async def etcd_fault(self, action: str, pick: int) -> bool:
        etcd = self.etcd
        if etcd is None:
            return False
        if action == "etcd_member_loss":
            return await ctl.lose_member(etcd, pick)
        if action == "etcd_quorum_loss":
            await ctl.lose_quorum(etcd, pick)
            await asyncio.sleep(2.0)  # commands recorded before the loss may finish
            mark = self.c.lab.fabric.clock()
            await asyncio.sleep(2.0 + pick % 3)
            ran = node_commands_since(self.c.lab.fabric, mark)
            assert not ran, f"node commands ran without a quorum to record them: {ran}"
            await ctl.restore_members(etcd)
            return True
        if action == "etcd_leader_change":
            return await ctl.change_leader(etcd, pick)
        if action == "slow_etcd":
            await ctl.slow_member(etcd, pick, 0.5 + (pick % 5) * 0.5)
            return True
        return False

    async def heal_network(self) -> None:
        for n in self.nodes:
            await self.c.lab.heal_partition(n)
        self.c.lab.fabric.cut_pairs.clear()
        self.c.lab.fabric.tick()

    async def acknowledge(self, text: str) -> None:
        """An acknowledged write, to prove none is lost (one etcd refuses while it
        has no quorum or elects: then nothing was acknowledged)."""
        e = AlertRaised(
            id=eid(),
            time=time.time(),
            actor="chaos",
            alert=f"chaos-{text}",
            severity="warning",
            message=text,
        )
        try:
            await self.c.store.append([e])
        except EtcdUnavailable:
            return
        self.acknowledged.append(e.id)

    async def check(self) -> None:
        check_invariants(self.c)
        assert not self.watch.violations, self.watch.violations
        await check_log(self.c.store, self.c.lab.fabric, self.acknowledged)

    async def final_heal(self) -> None:
        """Heal everything; with at most one node down, everything must run again
        and every job end."""
        c = self.c
        await self.heal_network()
        if self.down is not None:
            await c.lab.power_on(self.down)
        if self.etcd is not None:
            await ctl.restore_members(self.etcd)
        c.lab.fabric.tick()
        await self.orch.wait_leader()
        try:
            await c.wait_for("every instance running and in sync", self.converged, timeout=90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain()}") from None
        await c.wait_for("every job ended", self.jobs_ended, timeout=60)
        await self.check()

    def explain(self) -> str:
        """The hosts' side and the orchestrators', for failure messages."""
        fabric = self.c.lab.fabric
        hosts = [
            f"{n}: powered={h.powered} listening={self.c.lab.servers[n].listener is not None} "
            f"isolated={n in fabric.isolated_from_orchestrator}"
            for n, h in sorted(fabric.hosts.items())
        ]
        cut = sorted(sorted(p) for p in fabric.cut_pairs)
        return "\n".join([*hosts, f"cut: {cut}", self.orch.explain()])

    def converged(self) -> bool:
        lead = self.orch.leader()
        if lead is None:
            return False
        self.c.engine = lead
        return self.c.converged()

    def jobs_ended(self) -> bool:
        lead = self.orch.leader()
        return lead is not None and all(
            j.status.value in ("success", "error", "canceled") for j in lead.state.jobs.values()
        )


@dataclass(frozen=True)
class Outcome:
    injected: Counter[str]  # faults injected, per kind (a step that did not apply is left out)
    fences: int  # nodes powered off by the orchestrators' fence agents


async def run_schedule(tmp: Path, steps: list[tuple[str, int]]) -> Outcome:
    """Run `steps`; raises AssertionError on a broken invariant."""
    etcd_members = 3 if any(a in ETCD_FAULTS for a, _ in steps) else 1
    async with cluster(tmp, settings=SETTINGS, etcd_members=etcd_members) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(8))
        orch = ctl.Orchestrators(c)
        await orch.add()
        await orch.wait_leader(timeout=30)
        await orch.add()  # the standby
        await c.wait_for("converged", c.converged, timeout=60)
        window = SETTINGS.lost_timeout_s + SETTINGS.fence_retry_max_s  # type: ignore[operator]
        watch = FenceWatch(fabric=c.lab.fabric, window_s=window)
        sampler = asyncio.create_task(watch.run())
        run = Run(c=c, orch=orch, watch=watch, nodes=sorted(c.lab.fabric.hosts))
        try:
            for action, pick in steps:
                if await run.step(action, pick):
                    run.injected[action] += 1
                await run.acknowledge(f"{action}-{pick}")
                await asyncio.sleep(0.3 + (pick % 5) * 0.2)
                await run.check()
            await run.final_heal()
        finally:
            sampler.cancel()
            await orch.stop_all()
        return Outcome(injected=run.injected, fences=len(watch.fences))
