"""A job's decision and the "decided:" line of its log are recorded together or
not at all. They were two appends: when the log refused the second one (a term
ending, etcd losing its quorum), the job was taken up again without the line
that says it had decided, and decided again. A failover swapped the instance
back to where it was, and the job ended `success` with nothing moved; a
replace-disks asked for a new secondary once more."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from events.ids import InstanceName
from events.model import Event, JobKind, JobStatus, JobUpdated
from events.store import EtcdUnavailable, EventStore
from orchestrator.operations import submit_job
from tests.support.cluster.cluster_harness import cluster, instances, job_ended


class RefusesFirstDecision:
    """The event log, refusing (as etcd without a quorum does) the first append
    that carries a job's "decided:" line."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.refused: list[Sequence[Event]] = []

    async def append(
        self,
        events: Sequence[Event],
        *,
        expected: Mapping[str, int] | None = None,
        term: int | None = None,
    ) -> int:
        decision = any(isinstance(e, JobUpdated) and e.log.startswith("decided:") for e in events)
        if decision and not self.refused:
            self.refused.append(events)
            raise EtcdUnavailable("test", "refused once, as without a quorum")
        return await self.inner.append(events, expected=expected, term=term)

    async def confirm_term(self, term: int) -> None:
        await self.inner.confirm_term(term)

    def subscribe(self, from_revision: int) -> AsyncIterator[tuple[int, Event]]:
        return self.inner.subscribe(from_revision)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_failover_interrupted_at_its_decision_moves_the_instance_once(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(1))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        name = InstanceName("vm000")
        p, s = engine.state.placements[name].primary, engine.state.placements[name].secondary
        log = RefusesFirstDecision(c.store)
        engine.ctx.log_store = log
        accepted = await submit_job(
            c.store, engine.state, kind=JobKind.INSTANCE_FAILOVER, target=name, actor="test"
        )
        job_id = accepted.job_id
        assert job_id is not None
        await c.wait_for(
            "the job ended",
            lambda: job_ended(engine.state, job_id),
            timeout=60,
        )
        job = engine.state.jobs[job_id]
        assert job.status == JobStatus.SUCCESS, (job.error, job.log)
        assert len(log.refused) == 1, "the decision was never refused: the test tests nothing"
        placement = engine.state.placements[name]
        assert (placement.primary, placement.secondary) == (s, p), job.log
        await c.wait_for("converged", c.converged, timeout=60)
        assert c.running_on(name) == [s]
        assert c.primaries(f"{name}-d0") == [s]


async def test_a_replace_disks_interrupted_at_its_decision_picks_one_new_secondary(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(1))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        name = InstanceName("vm000")
        p, s = engine.state.placements[name].primary, engine.state.placements[name].secondary
        target = sorted(n for n in engine.state.desired.nodes if n not in (p, s))[0]
        log = RefusesFirstDecision(c.store)
        engine.ctx.log_store = log
        accepted = await submit_job(
            c.store,
            engine.state,
            kind=JobKind.INSTANCE_REPLACE_DISKS,
            target=name,
            params={"mode": "change-secondary", "node": target},
            actor="test",
        )
        job_id = accepted.job_id
        assert job_id is not None
        await c.wait_for(
            "the job ended",
            lambda: job_ended(engine.state, job_id),
            timeout=60,
        )
        job = engine.state.jobs[job_id]
        assert job.status == JobStatus.SUCCESS, (job.error, job.log)
        assert len(log.refused) == 1, "the decision was never refused: the test tests nothing"
        placement = engine.state.placements[name]
        assert (placement.primary, placement.secondary) == (p, target), job.log
        await c.wait_for("converged", c.converged, timeout=60)
        assert c.running_on(name) == [p]
