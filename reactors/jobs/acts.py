"""What every job does, whatever its kind: write a line or a status to its log, run
one node step recorded in that log before it runs and after (a command whose intent
cannot be recorded does not run), and wait for the instance workers to converge an
instance (a failed OS install or a cancel request ends the wait). Must not decide
anything about an instance: the job modules do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events.ids import InstanceName, JobId, new_event_id
from events.model import (
    DiskPlacement,
    Event,
    InstancePlaced,
    InstanceUpdated,
    JobStatus,
    JobUpdated,
)
from events.specs import InstanceSpec
from events.state import JobState, Placement
from reactors.context import ReactorContext
from reactors.plans.install import install_failure
from reactors.plans.instance import plan_instance
from reactors.plans.steps import Step
from reactors.prober import Prober
from reactors.seams import StepOutcome
from reactors.workers import DECIDED, InstanceWorkers, job_decided


class JobError(Exception):
    pass


# Whether the job already recorded its decision (a resumed job goes on from it);
# the workers read the same line (a live migration holds its instance until then).
decided = job_decided


@dataclass(frozen=True)
class JobActs:
    ctx: ReactorContext
    prober: Prober
    workers: InstanceWorkers
    converge_timeout_s: float = 600.0

    def _line(
        self, job_id: JobId, status: JobStatus | None, line: str, *, error: str = ""
    ) -> JobUpdated:
        return JobUpdated(
            **self.ctx.stamp(),
            correlation_id=job_id,
            job_id=job_id,
            status=status,
            log=line,
            error=error,
        )

    async def update(
        self,
        job_id: JobId,
        status: JobStatus | None,
        line: str,
        *,
        error: str = "",
        expected: dict[str, int] | None = None,
    ) -> None:
        await self.ctx.append([self._line(job_id, status, line, error=error)], expected=expected)

    async def decide(self, job: JobState, decision: Sequence[Event], line: str) -> None:
        """Record `decision` and the job's "decided: `line`" in one append (one etcd
        transaction): a job resumed by another leader finds both or neither. Apart,
        a term that ended between the two left the decision without its line, and
        the resumed job decided again (a failover swapped back, a disk grown twice,
        a second new secondary asked for)."""
        await self.ctx.append([*decision, self.decided_line(job, line)])

    def decided_line(self, job: JobState, line: str) -> JobUpdated:
        """The job's "decided: `line`", for a decision appended elsewhere with it."""
        return self._line(job.job_id, None, f"{DECIDED} {line}")

    async def log(self, job: JobState, line: str) -> None:
        await self.update(job.job_id, None, line)

    async def act(self, job: JobState, step: Step, *, prefix: str = "") -> StepOutcome:
        """Record the command in the job's log, then run it, then record how it went
        (a command whose intent cannot be recorded does not run)."""
        await self.log(job, f"{prefix}run {step.summary}")
        outcome = await self.ctx.nodes.execute(step)
        result = "ok" if outcome.ok else "FAILED " + outcome.error
        await self.log(job, f"{prefix}{step.summary}: {result}")
        return outcome

    async def exec(self, job: JobState, step: Step) -> None:
        outcome = await self.act(job, step)
        if not outcome.ok:
            raise JobError(f"{step.summary} failed: {outcome.error}")

    async def wait_converged(self, job: JobState, name: InstanceName) -> None:
        deadline = self.ctx.now() + self.converge_timeout_s
        last_wait: tuple[str, ...] = ()
        while True:
            if self.ctx.state.jobs.get(job.job_id, job).cancel_requested:
                raise JobError("canceled")
            plan = plan_instance(state=self.ctx.state, instance=name, now=self.ctx.now())
            if plan.converged:
                return
            if failed := install_failure(self.ctx.state, name):
                raise JobError(failed)
            if plan.waiting and plan.waiting != last_wait:
                last_wait = plan.waiting
                await self.log(job, f"{name}: waiting: " + "; ".join(plan.waiting))
            if self.ctx.now() > deadline:
                raise JobError(
                    f"{name} did not converge in {self.converge_timeout_s:.0f}s: "
                    + "; ".join(plan.waiting or tuple(s.summary for s in plan.steps))
                )
            self.workers.mark(name)
            await self.ctx.wait_change(timeout=1.0)

    def spec_recorded(self, job: JobState, spec: InstanceSpec, *, reason: str) -> InstanceUpdated:
        """The event recording `spec` as its instance's, on behalf of `job`."""
        return InstanceUpdated(
            id=new_event_id(),
            time=self.ctx.now(),
            actor=job.actor,
            correlation_id=job.job_id,
            reason=reason,
            spec=spec,
        )

    def disks_placed(
        self,
        job: JobState,
        name: InstanceName,
        placement: Placement,
        disks: tuple[DiskPlacement, ...],
        *,
        reason: str,
    ) -> InstancePlaced:
        """The event recording `placement` of `name` with `disks` instead of its
        own (nodes, kind and superseded node kept), on behalf of `job`."""
        return InstancePlaced(
            id=new_event_id(),
            time=self.ctx.now(),
            actor=job.actor,
            correlation_id=job.job_id,
            reason=reason,
            instance=name,
            primary=placement.primary,
            secondary=placement.secondary,
            disks=disks,
            kind=placement.kind,
            superseded=placement.superseded,
        )
