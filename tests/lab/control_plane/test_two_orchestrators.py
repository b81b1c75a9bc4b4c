"""Two orchestrators against one cluster (real etcd, simulated hosts over SSH):
exactly one leads and acts, a live migration runs once, and when the leader dies
without a word the standby takes over and finishes what is queued. Also the
guards one by one, each failing without itself: a job is claimed by one runner
only, a failover decided on a stale state writes nothing, and a node command
from a term that ended does not run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from events.election import Member
from events.ids import InstanceName, JobId, NodeName
from events.loading import load_state
from events.model import InstancePlaced, JobKind, JobStatus, PlacementKind
from events.state import ClusterState
from events.store import VersionConflict
from orchestrator.operations import confirm_node_off, submit_job
from reactors.context import ReactorContext
from reactors.engine import Engine
from reactors.healer import Healer
from reactors.jobs.runner import JobRunner
from reactors.leader import Leadership, TermNodes
from reactors.placer import Placer
from reactors.plans.steps import Step, StepKind
from reactors.prober import Prober
from reactors.workers import InstanceWorkers
from tests.support.chaos.terms import deposed_writes, term_history
from tests.support.cluster.cluster_harness import Cluster, cluster, eid, instances, job_ended
from tests.support.cluster.no_nodes import NO_NODES


def qmp(c: Cluster, what: str, name: str) -> list[str]:
    return [h for _, h, cmd in c.lab.fabric.journal if cmd == f"qmp {what} {name}"]


async def run_migration(c: Cluster, engine: Engine, name: InstanceName) -> str:
    accepted = await submit_job(
        c.store, engine.state, kind=JobKind.INSTANCE_MIGRATE, target=name, actor="test"
    )
    job_id = accepted.job_id
    assert job_id is not None
    await c.wait_for(
        "migration done",
        lambda: job_ended(engine.state, job_id),
        timeout=60,
    )
    job = engine.state.jobs[job_id]
    assert job.status == JobStatus.SUCCESS, job.log
    return job_id


async def test_one_of_two_acts_and_the_standby_takes_over(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(4))
        a = await c.start_engine(name="orch-a")
        b = await c.new_engine(name="orch-b")
        c.others.append(b)
        await b.start()
        await c.wait_for("converged", c.converged, timeout=60)
        assert a.leading and not b.leading and b.ctx.term is None
        name = sorted(a.state.placements)[0]
        before = a.state.placements[name]
        job_id = await run_migration(c, a, name)
        job = a.state.jobs[JobId(job_id)]
        assert [line for _, line in job.log].count(f"started {job.kind}") == 1
        assert len(qmp(c, "migrate", name)) == 1  # driven once, by one orchestrator
        assert c.running_on(name) == [before.secondary]
        assert not b.leading and b.reactors is None  # the standby never acted...
        await c.wait_for("the standby follows", lambda: job_ended(b.state, JobId(job_id)))
        assert b.state.jobs[JobId(job_id)].status == JobStatus.SUCCESS  # ...but follows

        # The leader dies without giving its lease up (kill -9): the standby
        # leads once the lease ends, under a higher term, and acts.
        old_term = a.ctx.term
        assert old_term is not None
        for task in a._tasks:
            task.cancel()
        a.leadership.term = None  # its reactors stop; the lease is left to expire
        await a._end_term()
        died = time.monotonic()
        term_b = await b.wait_leading(timeout=c.settings.lease_ttl_s + 10)
        assert term_b > old_term
        assert time.monotonic() - died < c.settings.lease_ttl_s + 5
        c.engine = b
        c.others.remove(b)
        await a.ctx.nodes.close()
        other = sorted(b.state.placements)[1]
        where = b.state.placements[other].secondary
        await run_migration(c, b, other)
        assert len(qmp(c, "migrate", other)) == 1
        assert c.running_on(other) == [where]
        terms = await term_history(c.store)
        assert [t.member for t in terms][-2:] == ["orch-a", "orch-b"]
        assert await deposed_writes(c.store) == []


@asynccontextmanager
async def a_term(c: Cluster) -> AsyncIterator[int]:
    """This test leads the cluster (no engine runs): its term."""
    lead = Leadership.for_store(c.store, ttl_s=c.settings.lease_ttl_s, member=Member.here(name="t"))
    keep = asyncio.create_task(lead.keep_alive())
    try:
        yield await lead.acquire()
    finally:
        keep.cancel()
        await lead.close()


def reactors_on(
    c: Cluster, state: ClusterState, term: int
) -> tuple[ReactorContext, Prober, Placer]:
    assert c.engine is None
    ctx = ReactorContext(log_store=c.store, nodes=NO_NODES, settings=c.settings, state=state)
    ctx.begin_term(term)
    prober = Prober(ctx=ctx)
    return ctx, prober, Placer(ctx=ctx)


async def converged_and_stopped(c: Cluster, count: int) -> ClusterState:
    await c.declare_nodes()
    await c.declare_instances(instances(count))
    await c.start_engine()
    await c.wait_for("converged", c.converged, timeout=60)
    await c.stop_engine()
    return await load_state(c.store)


async def test_a_job_is_claimed_by_one_runner(tmp_path: Path) -> None:
    """Two runners (as two leaders would be, were the term guard to fail) read the
    same queued job: one claim is written, the other refused."""
    async with cluster(tmp_path) as c:
        state = await converged_and_stopped(c, 2)
        name = sorted(state.placements)[0]
        accepted = await submit_job(
            c.store, state, kind=JobKind.INSTANCE_MIGRATE, target=name, actor="test"
        )
        state = await load_state(c.store)
        assert accepted.job_id is not None
        job = state.jobs[accepted.job_id]
        version = state.versions[f"job/{job.job_id}"]
        outcomes = []
        async with a_term(c) as term:
            for _ in range(2):
                ctx, prober, placer = reactors_on(c, state, term)
                workers = InstanceWorkers(ctx=ctx, prober=prober)
                runner = JobRunner(ctx=ctx, prober=prober, placer=placer, workers=workers)
                follow = asyncio.create_task(ctx.follow())
                try:
                    await runner._claim(job, version, resumed=False)
                    outcomes.append("claimed")
                except VersionConflict:
                    outcomes.append("refused")
                finally:
                    follow.cancel()
        assert outcomes == ["claimed", "refused"]
        state = await load_state(c.store)
        log = [line for _, line in state.jobs[job.job_id].log]
        assert log.count("started instance.migrate") == 1


async def test_a_failover_decided_on_a_stale_state_writes_nothing(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await converged_and_stopped(c, 4)
        victim = NodeName("node1")
        await c.lab.crash(victim)
        await confirm_node_off(
            c.store, await load_state(c.store), node=victim, actor="test", reason="off"
        )
        stale = await load_state(c.store)  # the healer's view when it decides
        hit = sorted(n for n, p in stale.placements.items() if p.primary == victim)
        assert hit
        moved = hit[0]
        p = stale.placements[moved]
        # Meanwhile a person decides about one of them.
        await c.store.append(
            [
                InstancePlaced(
                    id=eid(),
                    time=time.time(),
                    actor="user:alice",
                    instance=moved,
                    primary=p.primary,
                    secondary=p.secondary,
                    disks=p.disks,
                    kind=PlacementKind.REPLACE_SECONDARY,
                    reason="a person's decision, made meanwhile",
                )
            ]
        )
        async with a_term(c) as term:
            ctx, prober, placer = reactors_on(c, stale, term)
            follow = asyncio.create_task(ctx.follow())
            try:
                healer = Healer(ctx=ctx, prober=prober, placer=placer)
                await asyncio.wait_for(healer._fail_over(victim), 20)
            finally:
                follow.cancel()
        placed = [
            e
            async for _, e in c.store.read_all()
            if isinstance(e, InstancePlaced) and e.instance == moved
        ]
        assert placed[-1].actor == "user:alice", "a failover was written over a newer decision"


async def test_a_term_that_ended_runs_no_node_command(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(2))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        name = sorted(engine.state.placements)[0]
        node = engine.state.placements[name].primary
        nodes = engine.ctx.nodes
        assert isinstance(nodes, TermNodes)
        # The term ends here the moment its lease may have ended (a stall past it).
        engine.leadership._valid_until = engine.leadership.clock() - 0.1
        outcome = await nodes.execute(Step(kind=StepKind.STOP_VM, node=node, instance=name))
        assert not outcome.ok and "not the leader" in outcome.error
        await asyncio.sleep(0.5)
        assert c.running_on(name) == [node]
