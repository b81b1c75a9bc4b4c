"""A live migration of an instance whose DRBD pair is not connected is refused
before anything changes: promoting the secondary of a cut pair made two
primaries that could not see each other, and the pair came back a split brain
(make chaos seeds 107 and 115: a migration submitted right after the link
between the instance's nodes was cut). With the link back, the instance is
where it was, in sync, no split brain."""

from __future__ import annotations

from pathlib import Path

from events.model import JobKind, JobStatus
from orchestrator.operations import submit_job
from reactors.plans.queries import drbd_on
from tests.support.cluster.cluster_harness import cluster, instances, job_ended


async def test_a_migration_over_a_cut_link_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(2))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        name = sorted(engine.state.placements)[0]
        p, s = engine.state.placements[name].primary, engine.state.placements[name].secondary
        resource = f"{name}-d0"
        c.lab.cut_link(p, s)

        def seen_cut() -> bool:
            res = drbd_on(engine.state.observed.get(p), resource)
            return res is not None and all(pe.connection != "Connected" for pe in res.peers)

        await c.wait_for("the cut seen", seen_cut, timeout=20)
        accepted = await submit_job(
            c.store, engine.state, kind=JobKind.INSTANCE_MIGRATE, target=name, actor="test"
        )
        job_id = accepted.job_id
        assert job_id is not None
        await c.wait_for(
            "the job ended",
            lambda: job_ended(engine.state, job_id),
            timeout=30,
        )
        job = engine.state.jobs[job_id]
        assert job.status == JobStatus.ERROR
        assert "cannot migrate live" in job.error and "not connected" in job.error
        assert c.primaries(resource) == [p]
        assert c.running_on(name) == [p]
        c.lab.restore_link(p, s)
        await c.wait_for("converged", c.converged, timeout=60)
        assert not [a for a in engine.state.alerts if a.startswith("split-brain")]
        assert c.running_on(name) == [p]
