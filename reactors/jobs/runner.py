"""The job runner's loop: picks queued and running jobs, one job per object at a
time and disjoint objects in parallel, claims each, hands it to the module of its
kind and records how it ended. A job is claimed with an append that carries the
version of the job the runner read (a second runner's claim fails); a job found
`running` after a restart is resumed. Must not carry out a job itself: the job
modules (`reactors.jobs.moves`, `changes`, `hotplug`, `disk_removal`) do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from events.ids import InstanceName, JobId, NodeName
from events.model import Event, JobStatus, job_key
from events.state import ClusterState, JobState
from events.store import EtcdUnavailable, NotLeader, VersionConflict
from reactors.context import ReactorContext
from reactors.jobs.acts import JobActs, JobError
from reactors.jobs.changes import Changes
from reactors.jobs.disk_removal import DiskRemoval
from reactors.jobs.hotplug import Hotplug
from reactors.jobs.migration import Migrations
from reactors.jobs.moves import Moves
from reactors.placer import Placer
from reactors.prober import Prober
from reactors.workers import InstanceWorkers

log = structlog.get_logger("corral.jobs")


@dataclass
class JobRunner:
    ctx: ReactorContext
    prober: Prober
    placer: Placer
    workers: InstanceWorkers
    converge_timeout_s: float = 600.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _running: dict[JobId, asyncio.Task[None]] = field(default_factory=dict)
    _acts: JobActs = field(init=False)
    _moves: Moves = field(init=False)
    _changes: Changes = field(init=False)
    _hotplug: Hotplug = field(init=False)
    _disk_removal: DiskRemoval = field(init=False)

    def __post_init__(self) -> None:
        self._acts = JobActs(
            ctx=self.ctx,
            prober=self.prober,
            workers=self.workers,
            converge_timeout_s=self.converge_timeout_s,
        )
        self._moves = Moves(acts=self._acts, placer=self.placer, migrations=Migrations(self._acts))
        self._changes = Changes(self._acts)
        self._hotplug = Hotplug(self._acts)
        self._disk_removal = DiskRemoval(self._acts)

    def wake(self) -> None:
        self._wake.set()

    def on_event(self, event: Event, state: ClusterState) -> None:
        del state
        if event.TYPE.startswith("job."):
            self._wake.set()

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._running.values())

    async def run(self) -> None:
        while not self.ctx.stopping:
            await self._wake.wait()
            self._wake.clear()
            state = self.ctx.state
            busy: set[str] = set()
            for job in state.jobs.values():
                if job.job_id in self._running:
                    busy.update(job.targets)
            for job in sorted(state.jobs.values(), key=lambda j: (j.submitted_at, j.job_id)):
                if job.job_id in self._running:
                    continue
                if job.status == JobStatus.QUEUED and job.cancel_requested:
                    await self._acts.update(job.job_id, JobStatus.CANCELED, "canceled while queued")
                    continue
                if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                    continue
                if busy & set(job.targets):
                    continue
                busy.update(job.targets)
                version = state.versions.get(job_key(job.job_id), 0)
                self._running[job.job_id] = asyncio.create_task(self._run_job(job, version))

    async def _run_job(self, job: JobState, version: int) -> None:
        """Run `job` as read at `version` (of its object key)."""
        bound = log.bind(job=job.job_id, kind=job.kind, targets=list(job.targets))
        update = self._acts.update
        try:
            resumed = job.status == JobStatus.RUNNING
            await self._claim(job, version, resumed=resumed)
            await self._dispatch(job, resumed=resumed)
            await update(job.job_id, JobStatus.SUCCESS, "done")
            bound.info("job succeeded")
        except asyncio.CancelledError:
            raise
        except VersionConflict:
            bound.info("job changed before this runner claimed it; deciding again")
        except (NotLeader, EtcdUnavailable) as exc:
            # Not a failure of the job: it stays as the log says, and the leader
            # that can write takes it up again.
            bound.warning("job interrupted: the log cannot be written", error=str(exc))
            await asyncio.sleep(1.0)
        except Exception as exc:
            bound.warning("job failed", error=str(exc))
            await update(job.job_id, JobStatus.ERROR, "failed", error=str(exc)[:500])
        finally:
            self._running.pop(job.job_id, None)
            self._wake.set()

    async def _claim(self, job: JobState, version: int, *, resumed: bool) -> None:
        """Mark the job as this runner's, only if it is still at the version the
        runner read: of two runners that read it alike, one claim succeeds."""
        expected = {job_key(job.job_id): version}
        if resumed:
            line = "resumed by a new leader or after a restart"
            await self._acts.update(job.job_id, None, line, expected=expected)
        else:
            await self._acts.update(
                job.job_id, JobStatus.RUNNING, f"started {job.kind}", expected=expected
            )

    async def _dispatch(self, job: JobState, *, resumed: bool) -> None:
        params = dict(job.params)
        target = job.targets[0].partition("/")[2]
        name = InstanceName(target)
        kind = job.kind
        moves, changes = self._moves, self._changes
        if kind in ("instance.start", "instance.stop", "instance.activate-disks"):
            await self._acts.wait_converged(job, name)
        elif kind == "instance.reboot":
            await moves.reboot(job, name)
        elif kind == "instance.failover":
            await moves.failover(job, name)
        elif kind == "instance.migrate":
            await moves.migrate_or_failover(job, name, resumed=resumed)
        elif kind == "instance.replace-disks":
            await moves.replace_disks(job, name, params)
        elif kind == "instance.grow-disk":
            await changes.grow(job, name, params)
        elif kind == "instance.modify":
            await changes.modified(job, name)
        elif kind == "instance.hotplug":
            await self._hotplug.run(job, name, params)
        elif kind == "instance.remove-disk":
            await self._disk_removal.run(job, name, params)
        elif kind == "instance.rename":
            await changes.rename(job, name, InstanceName(params.get("new_name", "")))
        elif kind == "instance.reinstall":
            await changes.reinstalled(job, name)
        elif kind in ("node.migrate", "node.failover", "node.evacuate"):
            await moves.node_job(job, NodeName(target), kind)
        else:
            raise JobError(f"job kind {kind!r} is not supported")
