"""Operations as jobs on the simulated cluster: migrate, failover, replace-disks
(new secondary), grow-disk, evacuate a node, remove an instance. Each ends in the
right observed state and leaves nothing behind on any simulated host. A migration
to a node without the memory for the instance is refused and changes nothing,
also when two migrations to one node run at once."""

from __future__ import annotations

import time
from pathlib import Path

from events.ids import InstanceName, JobId, NodeName
from events.model import InstanceRemoved, JobKind
from events.specs import ClusterPolicy, DiskSpec, InstanceSpec
from events.state import JobState
from orchestrator.operations import submit_job
from simulators.lab import HostConfig
from tests.support.cluster.cluster_harness import Cluster, cluster, eid, instances, job_ended


def leftovers(c: Cluster, instance: str, allowed: set[str]) -> list[str]:
    """Anything of `instance` on hosts outside `allowed`."""
    found = []
    for h in c.lab.fabric.hosts.values():
        if h.name in allowed:
            continue
        if instance in h.vms:
            found.append(f"vm on {h.name}")
        found += [f"lv {v} on {h.name}" for v in h.volumes if v.startswith(instance + "-d")]
        found += [f"drbd {r} on {h.name}" for r in h.copies if r.startswith(instance + "-d")]
        found += [f"file {f} on {h.name}" for f in h.files if f"/{instance}-d" in f]
    return found


async def submit(c: Cluster, kind: JobKind, target: str, **params: str) -> JobId:
    """A job as alice asks for it; its id."""
    assert c.engine is not None
    accepted = await submit_job(
        c.store,
        c.engine.state,
        kind=kind,
        target=target,
        params=params,
        actor="alice",
        reason="test",
    )
    assert accepted.job_id is not None
    return accepted.job_id


async def ended(c: Cluster, job_ids: list[JobId]) -> dict[JobId, JobState]:
    """The jobs, once every one of them has ended."""

    def done() -> bool:
        assert c.engine is not None
        return all(job_ended(c.engine.state, j) for j in job_ids)

    await c.wait_for("jobs ended", done, timeout=60)
    assert c.engine is not None
    return {j: c.engine.state.jobs[j] for j in job_ids}


async def run_job(c: Cluster, kind: JobKind, target: str, **params: str) -> str:
    job_id = await submit(c, kind, target, **params)
    job = (await ended(c, [job_id]))[job_id]
    assert job.status == "success", (job.error, job.log)
    return job_id


async def test_jobs_move_instances_and_leave_nothing_behind(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(6))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        name = InstanceName("vm000")

        # Live migration: DRBD dual-primary only during the move.
        before = engine.state.placements[name]
        await run_job(c, JobKind.INSTANCE_MIGRATE, name)
        after = engine.state.placements[name]
        assert (after.primary, after.secondary) == (before.secondary, before.primary)
        await c.wait_for("converged after migrate", c.converged)
        assert c.running_on(name) == [after.primary]
        assert c.primaries(f"{name}-d0") == [after.primary]
        assert (
            "allow-two-primaries no"
            in c.lab.host(after.primary).files[f"/etc/drbd.d/{name}-d0.res"].decode()
        )

        # Failover: stop, swap roles, start.
        await run_job(c, JobKind.INSTANCE_FAILOVER, name)
        await c.wait_for("converged after failover", c.converged)
        p = engine.state.placements[name]
        assert (p.primary, p.secondary) == (before.primary, before.secondary)
        assert c.running_on(name) == [p.primary]

        # Replace disks: a new secondary, resynced; the old copy removed.
        old_secondary = p.secondary
        await run_job(c, JobKind.INSTANCE_REPLACE_DISKS, name, mode="change-secondary")
        p = engine.state.placements[name]
        assert p.secondary != old_secondary
        await c.wait_for(
            "old copy removed", lambda: not leftovers(c, name, {p.primary, p.secondary})
        )
        assert c.lab.host(p.secondary).copies[f"{name}-d0"].disk == "UpToDate"

        # Grow a disk on both nodes.
        await run_job(c, JobKind.INSTANCE_GROW_DISK, name, disk="0", amount_mib="1024")
        for node in (p.primary, p.secondary):
            assert c.lab.host(node).volumes[f"{name}-d0"].size_mib == 10 * 1024 + 1024

        # Evacuate a node: no primaries, no secondaries left on it.
        node = p.primary
        await run_job(c, JobKind.NODE_EVACUATE, node)
        await c.wait_for("converged after evacuate", c.converged, timeout=60)
        state = engine.state
        assert all(node not in (pl.primary, pl.secondary) for pl in state.placements.values())
        host = c.lab.host(node)
        await c.wait_for(
            "evacuated node empty", lambda: not host.vms and not host.copies and not host.volumes
        )

        # Remove an instance: nothing left anywhere.
        gone = InstanceName("vm001")
        await c.declare([InstanceRemoved(id=eid(), time=time.time(), actor="alice", instance=gone)])
        await c.wait_for("vm001 gone", lambda: not leftovers(c, gone, set()))
        assert c.running_on(gone) == []


def _ran_no_step(job: JobState) -> bool:
    """Whether the job's log shows no step run on a node (it logs each one)."""
    return not [line for _, line in job.log if line.endswith(": ok") or " FAILED " in line]


async def test_a_migration_needs_the_memory_on_its_target(tmp_path: Path) -> None:
    # 8 GiB nodes (7.5 GiB for instances); N+1 off, so that placement alone
    # does not keep the memory free. vma and vmb (4 GiB each) both have their
    # second copy on node3: either fits there, not both.
    hosts = [HostConfig(name=f"node{i}", memory_mib=8192) for i in range(1, 4)]
    async with cluster(tmp_path, hosts=hosts) as c:
        await c.declare_nodes(policy=ClusterPolicy(n_plus_one=False))
        pins = {"vma": ("node1", "node3"), "vmb": ("node2", "node3")}
        specs = [
            InstanceSpec(
                name=InstanceName(name),
                memory_mib=4096,
                vcpus=1,
                disks=(DiskSpec(size_mib=1024),),
                primary=NodeName(p),
                secondary=NodeName(s),
            )
            for name, (p, s) in pins.items()
        ]
        await c.declare_instances(specs)
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=60)
        # both asked for at once: the runner starts both, and the second to
        # start must count the first one's memory as taken on node3
        submitted = [await submit(c, JobKind.INSTANCE_MIGRATE, name) for name in pins]
        jobs = await ended(c, submitted)
        statuses = sorted(job.status for job in jobs.values())
        assert statuses == ["error", "success"], jobs
        (refused,) = [job for job in jobs.values() if job.status == "error"]
        assert _ran_no_step(refused), refused.log
        error = refused.error
        assert "not enough memory on node3" in error and "needs 4096M, 3584M free" in error
        await c.wait_for("converged after the migration", c.converged, timeout=60)
        on_node3 = [n for n in pins if engine.state.placements[InstanceName(n)].primary == "node3"]
        assert len(on_node3) == 1
        (stayed,) = [n for n in pins if n not in on_node3]
        assert (
            engine.state.placements[InstanceName(stayed)].primary,
            engine.state.placements[InstanceName(stayed)].secondary,
        ) == pins[stayed]
        assert c.running_on(stayed) == [pins[stayed][0]]
        assert c.running_on(on_node3[0]) == ["node3"]
        # asked again on its own (a plan made before the first move), still refused
        again = await submit(c, JobKind.INSTANCE_MIGRATE, stayed)
        job = (await ended(c, [again]))[again]
        assert _ran_no_step(job), job.log
        assert job.status == "error" and "not enough memory on node3" in job.error
        assert c.running_on(stayed) == [pins[stayed][0]]
        assert c.primaries(f"{stayed}-d0") == [pins[stayed][0]]
