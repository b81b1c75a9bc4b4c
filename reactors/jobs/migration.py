"""Live migration, driven step by step because its order (dual-primary, incoming VM,
QMP migrate, demote) cannot be derived from a level: the steps, the switch recorded
as a new placement once the VM runs on the target, the rollback when a step fails,
and the recovery of a migration found half-done after a restart (finished if the VM
already runs on the target, else rolled back). Also the placement event of any
primary/secondary swap. Must not check whether a move fits: the caller holds that
check (`reactors.jobs.moves.Moves`) around a migration.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.ids import InstanceName, NodeName
from events.model import InstancePlaced, PlacementKind
from events.state import JobState
from reactors.context import ReactorContext
from reactors.jobs.acts import JobActs, JobError, decided
from reactors.plans.install import seed_id
from reactors.plans.migration import migration_blockers
from reactors.plans.queries import vm_on
from reactors.plans.steps import Step, StepKind, disk_configs, effective_hv

MIGRATION_PORT_BASE = 8000


def swapped(
    ctx: ReactorContext,
    job: JobState,
    name: InstanceName,
    *,
    p: NodeName,
    s: NodeName,
    kind: PlacementKind,
    reason: str,
) -> InstancePlaced:
    """The event recording that `job` made `name`'s secondary `s` its
    primary and its primary `p` its secondary, disks kept."""
    return InstancePlaced(
        **ctx.stamp(),
        correlation_id=job.job_id,
        reason=reason,
        instance=name,
        primary=s,
        secondary=p,
        disks=ctx.state.placements[name].disks,
        kind=kind,
    )


@dataclass(frozen=True)
class Migrations:
    acts: JobActs

    async def live(self, job: JobState, name: InstanceName, p: NodeName, s: NodeName) -> None:
        """Migrate `name` from `p` to `s` while it runs, or raise (rolled back) naming
        what stands in the way."""
        prober = self.acts.prober
        await prober.probe(p)
        await prober.probe(s)
        state = self.acts.ctx.state
        configs = disk_configs(state=state, instance=name, placement=state.placements[name])
        blockers = migration_blockers(
            configs=configs,
            p=p,
            s=s,
            p_obs=state.observed.get(p),
            s_obs=state.observed.get(s),
        )
        if blockers:
            raise JobError("cannot migrate live: " + "; ".join(blockers))
        await self._migrate_to(job, name, p, s)

    async def _migrate_to(
        self, job: JobState, name: InstanceName, p: NodeName, s: NodeName
    ) -> None:
        exec_ = self.acts.exec
        state = self.acts.ctx.state
        placement = state.placements[name]
        spec = state.desired.instances[name]
        configs = disk_configs(state=state, instance=name, placement=placement)
        s_spec = state.desired.nodes[s]
        port = MIGRATION_PORT_BASE + (configs[0].minor % 1000 if configs else 0)
        try:
            for cfg in configs:
                for node in (p, s):
                    await exec_(
                        job,
                        Step(kind=StepKind.DRBD_DUAL_PRIMARY, node=node, instance=name, disk=cfg),
                    )
                await exec_(job, Step(kind=StepKind.DRBD_PRIMARY, node=s, instance=name, disk=cfg))
            await exec_(
                job,
                Step(
                    kind=StepKind.START_VM_INCOMING,
                    node=s,
                    instance=name,
                    # the source's parameters: the incoming VM must match it
                    spec=effective_hv(state=self.acts.ctx.state, spec=spec, node=p),
                    disks=configs,
                    migrate_address=s_spec.drbd_address,
                    migrate_port=port,
                    seed_id=seed_id(state, spec),
                ),
            )
            await exec_(
                job,
                Step(
                    kind=StepKind.MIGRATE_VM,
                    node=p,
                    instance=name,
                    migrate_address=s_spec.drbd_address,
                    migrate_port=port,
                ),
            )
        except JobError:
            await self._rollback(job, name, p, s)
            raise
        await self._finish(job, name, p, s)

    async def _finish(self, job: JobState, name: InstanceName, p: NodeName, s: NodeName) -> None:
        """The VM runs on `s`: quit the source, demote it, back to one primary, and
        record the new placement."""
        acts, ctx = self.acts, self.acts.ctx
        placement = ctx.state.placements[name]
        await acts.exec(job, Step(kind=StepKind.STOP_VM, node=p, instance=name, note="source"))
        for cfg in disk_configs(state=ctx.state, instance=name, placement=placement):
            await acts.exec(
                job, Step(kind=StepKind.DRBD_SECONDARY, node=p, instance=name, disk=cfg)
            )
            for node in (p, s):
                await acts.exec(
                    job,
                    Step(kind=StepKind.DRBD_SINGLE_PRIMARY, node=node, instance=name, disk=cfg),
                )
        why = f"live migration requested by {job.actor}"
        decision = [swapped(ctx, job, name, p=p, s=s, kind=PlacementKind.MIGRATE, reason=why)]
        await acts.decide(job, decision, f"primary {p} -> {s} (migrated)")
        await acts.prober.probe(p)
        await acts.prober.probe(s)

    async def _rollback(self, job: JobState, name: InstanceName, p: NodeName, s: NodeName) -> None:
        """The VM stays on `p`: quit any incoming copy on `s`, demote `s`, one primary."""
        state = self.acts.ctx.state
        placement = state.placements[name]
        steps = [Step(kind=StepKind.STOP_VM, node=s, instance=name, note="incoming copy")]
        for cfg in disk_configs(state=state, instance=name, placement=placement):
            steps.append(Step(kind=StepKind.DRBD_SECONDARY, node=s, instance=name, disk=cfg))
            for node in (p, s):
                steps.append(
                    Step(kind=StepKind.DRBD_SINGLE_PRIMARY, node=node, instance=name, disk=cfg)
                )
        for step in steps:
            await self.acts.act(job, step, prefix="rollback ")
        await self.acts.prober.probe(p)
        await self.acts.prober.probe(s)

    async def recover(self, job: JobState, name: InstanceName) -> None:
        """A migration job found running after a restart: look at the nodes."""
        acts = self.acts
        placement = acts.ctx.state.placements[name]
        if decided(job):
            await acts.wait_converged(job, name)
            return
        p, s = placement.primary, placement.secondary
        await acts.prober.probe(p)
        await acts.prober.probe(s)
        state = acts.ctx.state
        on_p = vm_on(state.observed.get(p), name)
        on_s = vm_on(state.observed.get(s), name)
        if (
            on_s is not None
            and on_s.status == "running"
            and (on_p is None or on_p.status in ("postmigrate", "paused", "shutdown"))
        ):
            await acts.log(job, "the VM already runs on the target: finishing the migration")
            await self._finish(job, name, p, s)
            await acts.wait_converged(job, name)
            return
        await acts.log(job, "interrupted before the switch: rolling back to the source")
        await self._rollback(job, name, p, s)
        raise JobError("interrupted by an orchestrator restart; rolled back, VM on " + p)
