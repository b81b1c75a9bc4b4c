"""A live migration asked for an instance whose VM does not run falls back to a
failover: the job records the swapped placement and the instance workers bring
the VM up on the new primary. The workers used to keep off the instance for as
long as the migration job ran, while the job waited for them to converge it: the
instance stayed down until the job's converge timeout (ten minutes). Found by
make chaos seed 58 (a VM killed, then the migration); here the VM cannot start
again on its primary (qemu fails there), so it is not running when the job
looks."""

from __future__ import annotations

from pathlib import Path

from events.ids import InstanceName
from events.model import JobKind, JobStatus
from orchestrator.operations import submit_job
from reactors.plans.queries import vm_on
from simulators.fabric import CommandFault
from tests.support.cluster.cluster_harness import cluster, instances, job_ended


async def test_a_migration_of_a_stopped_vm_fails_over_and_the_vm_runs(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(1))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        name = InstanceName("vm000")
        p, s = engine.state.placements[name].primary, engine.state.placements[name].secondary
        c.lab.add_fault(p, CommandFault(match="qemu-system", kind="fail"))
        c.lab.fabric.kill_vm(p, name)
        await c.wait_for(
            "the VM seen down", lambda: vm_on(engine.state.observed.get(p), name) is None
        )
        accepted = await submit_job(
            c.store, engine.state, kind=JobKind.INSTANCE_MIGRATE, target=name, actor="test"
        )
        job_id = accepted.job_id
        assert job_id is not None
        await c.wait_for(
            "the job ended",
            lambda: job_ended(engine.state, job_id),
            timeout=45,
        )
        job = engine.state.jobs[job_id]
        assert job.status == JobStatus.SUCCESS, (job.error, job.log)
        assert any("failing over instead of migrating" in line for _, line in job.log)
        placement = engine.state.placements[name]
        assert (placement.primary, placement.secondary) == (s, p)
        assert c.running_on(name) == [s]
        assert c.primaries(f"{name}-d0") == [s]
