"""The job runner: carries out queued operations (start, stop, reboot, failover,
live migration, replace-disks, grow-disk, node migrate/failover/evacuate) one job
per object at a time, disjoint objects in parallel, with status and a per-step log
recorded as JobUpdated events.

Most jobs only record a decision (a new placement, a bigger disk) and wait for the
instance workers to converge; live migration is driven step by step here, because
its order (dual-primary, incoming VM, QMP migrate, demote) cannot be derived from a
level. A job found `running` after a restart is resumed: a half-done migration is
finished if the VM already runs on the target, else rolled back. A migration or
failover is refused, changing nothing, when its target has too little free memory
for the instance (as Ganeti checks), counting the moves to that node under way.

A job is claimed with an append that carries the version of the job the runner
read (a second runner's claim fails), and every node command a job runs is
recorded in its log before it runs: no decision, no command.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import structlog

from events.ids import InstanceName, JobId, NodeName, new_event_id
from events.model import (
    Event,
    InstancePlaced,
    InstanceRenamed,
    InstanceUpdated,
    JobStatus,
    JobUpdated,
    PlacementKind,
    job_key,
)
from events.specs import DiskSpec
from events.state import ClusterState, JobState
from events.store import EtcdUnavailable, NotLeader, VersionConflict
from reactors.context import ReactorContext
from reactors.naming import DiskNumbers
from reactors.placement.allocator import run_refusal
from reactors.placer import Placer
from reactors.plans.install import install_failure, seed_id
from reactors.plans.instance import (
    DiskConfig,
    Step,
    StepKind,
    disk_configs,
    drbd_on,
    effective_hv,
    node_actionable,
    node_fenced,
    plan_instance,
    vm_alive,
    vm_on,
)
from reactors.plans.migration import migration_blockers
from reactors.plans.rename import rename_blockers, rename_missing, rename_steps
from reactors.prober import Prober
from reactors.seams import StepOutcome
from reactors.workers import InstanceWorkers

log = structlog.get_logger("corral.jobs")

MIGRATION_PORT_BASE = 8000


class JobError(Exception):
    pass


@dataclass
class JobRunner:
    ctx: ReactorContext
    prober: Prober
    placer: Placer
    workers: InstanceWorkers
    converge_timeout_s: float = 600.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _running: dict[JobId, asyncio.Task[None]] = field(default_factory=dict)
    # instances a migration or failover here is bringing to a node, with their
    # memory, until the new placement is in the state: two moves to one node
    # at once must both fit there
    _incoming: dict[InstanceName, tuple[NodeName, int]] = field(default_factory=dict)

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
                    await self._update(job.job_id, JobStatus.CANCELED, "canceled while queued")
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
        try:
            resumed = job.status == JobStatus.RUNNING
            await self._claim(job, version, resumed=resumed)
            await self._dispatch(job, resumed=resumed)
            await self._update(job.job_id, JobStatus.SUCCESS, "done")
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
            await self._update(job.job_id, JobStatus.ERROR, "failed", error=str(exc)[:500])
        finally:
            self._running.pop(job.job_id, None)
            self._wake.set()

    async def _claim(self, job: JobState, version: int, *, resumed: bool) -> None:
        """Mark the job as this runner's, only if it is still at the version the
        runner read: of two runners that read it alike, one claim succeeds."""
        expected = {job_key(job.job_id): version}
        if resumed:
            line = "resumed by a new leader or after a restart"
            await self._update(job.job_id, None, line, expected=expected)
        else:
            await self._update(
                job.job_id, JobStatus.RUNNING, f"started {job.kind}", expected=expected
            )

    async def _update(
        self,
        job_id: JobId,
        status: JobStatus | None,
        line: str,
        *,
        error: str = "",
        expected: dict[str, int] | None = None,
    ) -> None:
        await self.ctx.append(
            [
                JobUpdated(
                    id=new_event_id(),
                    time=self.ctx.now(),
                    actor=self.ctx.actor,
                    correlation_id=job_id,
                    job_id=job_id,
                    status=status,
                    log=line,
                    error=error,
                )
            ],
            expected=expected,
        )

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self, job: JobState, *, resumed: bool) -> None:
        params = dict(job.params)
        target = job.targets[0].partition("/")[2]
        kind = job.kind
        if kind in ("instance.start", "instance.stop"):
            await self._wait_converged(job, InstanceName(target))
        elif kind == "instance.reboot":
            await self._reboot(job, InstanceName(target))
        elif kind == "instance.failover":
            await self._failover(job, InstanceName(target))
        elif kind == "instance.migrate":
            await self._migrate_or_failover(job, InstanceName(target), resumed=resumed)
        elif kind == "instance.replace-disks":
            await self._replace_disks(job, InstanceName(target), params)
        elif kind == "instance.grow-disk":
            await self._grow(job, InstanceName(target), params)
        elif kind == "instance.activate-disks":
            await self._wait_converged(job, InstanceName(target))
        elif kind == "instance.modify":
            await self._modified(job, InstanceName(target))
        elif kind == "instance.hotplug":
            await self._hotplug(job, InstanceName(target), params)
        elif kind == "instance.rename":
            await self._rename(job, InstanceName(target), InstanceName(params.get("new_name", "")))
        elif kind == "instance.reinstall":
            await self._reinstalled(job, InstanceName(target))
        elif kind in ("node.migrate", "node.failover", "node.evacuate"):
            await self._node_job(job, NodeName(target), kind)
        else:
            raise JobError(f"job kind {kind!r} is not supported")

    async def _log(self, job: JobState, line: str) -> None:
        await self._update(job.job_id, None, line)

    async def _wait_converged(self, job: JobState, name: InstanceName) -> None:
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
                await self._log(job, f"{name}: waiting: " + "; ".join(plan.waiting))
            if self.ctx.now() > deadline:
                raise JobError(
                    f"{name} did not converge in {self.converge_timeout_s:.0f}s: "
                    + "; ".join(plan.waiting or tuple(s.summary for s in plan.steps))
                )
            self.workers.mark(name)
            await self.ctx.wait_change(timeout=1.0)

    # ------------------------------------------------------------------ instance jobs

    async def _reboot(self, job: JobState, name: InstanceName) -> None:
        placement = self.ctx.state.placements.get(name)
        if placement is None:
            raise JobError(f"{name} is not placed")
        obs = self.ctx.state.observed.get(placement.primary)
        if vm_alive(vm_on(obs, name)):
            stop = Step(kind=StepKind.STOP_VM, node=placement.primary, instance=name, note="reboot")
            await self._exec(job, stop)
            await self.prober.probe(placement.primary)
        await self._wait_converged(job, name)

    @contextmanager
    def _failing_over(self, name: InstanceName) -> Iterator[tuple[NodeName, NodeName]]:
        """Checks that `name` can move to its secondary (reachable, every disk
        UpToDate there, memory free for it, counting the moves to that node
        under way); (primary, secondary). Until this ends, `name`'s memory
        counts as taken on the secondary, for the other moves' checks."""
        state = self.ctx.state
        placement = state.placements.get(name)
        if placement is None:
            raise JobError(f"{name} is not placed")
        s = placement.secondary
        if not node_actionable(state, s):
            raise JobError(f"secondary {s} is not reachable")
        for cfg in disk_configs(state=state, instance=name, placement=placement):
            res = drbd_on(state.observed.get(s), cfg.resource)
            if res is None or res.disk != "UpToDate":
                raise JobError(
                    f"{cfg.resource} on {s} is {res.disk if res else 'down'}, not UpToDate"
                )
        coming = 0
        for other, (node, mib) in self._incoming.items():
            there = state.placements.get(other)
            # (once its new placement is in the state, it is counted there)
            if node == s and other != name and (there is None or there.primary != s):
                coming += mib
        why = run_refusal(state=state, instance=name, node=s, incoming_mib=coming)
        if why:
            raise JobError(why)
        spec = state.desired.instances.get(name)
        self._incoming[name] = (s, spec.memory_mib if spec else 0)
        try:
            yield placement.primary, s
        finally:
            self._incoming.pop(name, None)

    async def _swap(self, job: JobState, name: InstanceName, kind: PlacementKind) -> None:
        with self._failing_over(name) as (p, s):
            why = f"{job.kind} requested by {job.actor}: {job.reason}".strip(": ")
            await self.ctx.append([self._swapped(job, name, p=p, s=s, kind=kind, reason=why)])
        await self._log(job, f"decided: primary {p} -> {s}")

    def _swapped(
        self,
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
            id=new_event_id(),
            time=self.ctx.now(),
            actor=self.ctx.actor,
            correlation_id=job.job_id,
            reason=reason,
            instance=name,
            primary=s,
            secondary=p,
            disks=self.ctx.state.placements[name].disks,
            kind=kind,
        )

    async def _failover(self, job: JobState, name: InstanceName) -> None:
        if not any(line.startswith("decided:") for _, line in job.log):
            await self._swap(job, name, PlacementKind.FAILOVER)
        await self._wait_converged(job, name)

    async def _migrate_or_failover(
        self, job: JobState, name: InstanceName, *, resumed: bool
    ) -> None:
        state = self.ctx.state
        placement = state.placements.get(name)
        if placement is None:
            raise JobError(f"{name} is not placed")
        if resumed:
            await self._recover_migration(job, name)
            return
        if not vm_alive(vm_on(state.observed.get(placement.primary), name)):
            await self._log(job, f"{name} is not running: failing over instead of migrating")
            await self._failover(job, name)
            return
        await self._live_migrate(job, name)

    async def _act(self, job: JobState, step: Step, *, prefix: str = "") -> StepOutcome:
        """Record the command in the job's log, then run it, then record how it went
        (a command whose intent cannot be recorded does not run)."""
        await self._log(job, f"{prefix}run {step.summary}")
        outcome = await self.ctx.nodes.execute(step)
        result = "ok" if outcome.ok else "FAILED " + outcome.error
        await self._log(job, f"{prefix}{step.summary}: {result}")
        return outcome

    async def _exec(self, job: JobState, step: Step) -> None:
        outcome = await self._act(job, step)
        if not outcome.ok:
            raise JobError(f"{step.summary} failed: {outcome.error}")

    async def _live_migrate(self, job: JobState, name: InstanceName) -> None:
        with self._failing_over(name) as (p, s):
            await self.prober.probe(p)
            await self.prober.probe(s)
            state = self.ctx.state
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
        state = self.ctx.state
        placement = state.placements[name]
        spec = state.desired.instances[name]
        configs = disk_configs(state=state, instance=name, placement=placement)
        s_spec = state.desired.nodes[s]
        port = MIGRATION_PORT_BASE + (configs[0].minor % 1000 if configs else 0)
        try:
            for cfg in configs:
                for node in (p, s):
                    await self._exec(
                        job,
                        Step(kind=StepKind.DRBD_DUAL_PRIMARY, node=node, instance=name, disk=cfg),
                    )
                await self._exec(
                    job, Step(kind=StepKind.DRBD_PRIMARY, node=s, instance=name, disk=cfg)
                )
            await self._exec(
                job,
                Step(
                    kind=StepKind.START_VM_INCOMING,
                    node=s,
                    instance=name,
                    # the source's parameters: the incoming VM must match it
                    spec=effective_hv(state=self.ctx.state, spec=spec, node=p),
                    disks=configs,
                    migrate_address=s_spec.drbd_address,
                    migrate_port=port,
                    seed_id=seed_id(state, spec),
                ),
            )
            await self._exec(
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
            await self._rollback_migration(job, name, p, s)
            raise
        await self._finish_migration(job, name, p, s)

    async def _finish_migration(
        self, job: JobState, name: InstanceName, p: NodeName, s: NodeName
    ) -> None:
        """The VM runs on `s`: quit the source, demote it, back to one primary, and
        record the new placement."""
        state = self.ctx.state
        placement = state.placements[name]
        await self._exec(job, Step(kind=StepKind.STOP_VM, node=p, instance=name, note="source"))
        for cfg in disk_configs(state=state, instance=name, placement=placement):
            await self._exec(
                job, Step(kind=StepKind.DRBD_SECONDARY, node=p, instance=name, disk=cfg)
            )
            for node in (p, s):
                await self._exec(
                    job,
                    Step(kind=StepKind.DRBD_SINGLE_PRIMARY, node=node, instance=name, disk=cfg),
                )
        why = f"live migration requested by {job.actor}"
        await self.ctx.append(
            [self._swapped(job, name, p=p, s=s, kind=PlacementKind.MIGRATE, reason=why)]
        )
        await self.prober.probe(p)
        await self.prober.probe(s)
        await self._log(job, f"decided: primary {p} -> {s} (migrated)")

    async def _rollback_migration(
        self, job: JobState, name: InstanceName, p: NodeName, s: NodeName
    ) -> None:
        """The VM stays on `p`: quit any incoming copy on `s`, demote `s`, one primary."""
        state = self.ctx.state
        placement = state.placements[name]
        steps = [Step(kind=StepKind.STOP_VM, node=s, instance=name, note="incoming copy")]
        for cfg in disk_configs(state=state, instance=name, placement=placement):
            steps.append(Step(kind=StepKind.DRBD_SECONDARY, node=s, instance=name, disk=cfg))
            for node in (p, s):
                steps.append(
                    Step(kind=StepKind.DRBD_SINGLE_PRIMARY, node=node, instance=name, disk=cfg)
                )
        for step in steps:
            await self._act(job, step, prefix="rollback ")
        await self.prober.probe(p)
        await self.prober.probe(s)

    async def _recover_migration(self, job: JobState, name: InstanceName) -> None:
        """A migration job found running after a restart: look at the nodes."""
        placement = self.ctx.state.placements[name]
        if any(line.startswith("decided:") for _, line in job.log):
            await self._wait_converged(job, name)
            return
        p, s = placement.primary, placement.secondary
        await self.prober.probe(p)
        await self.prober.probe(s)
        state = self.ctx.state
        on_p = vm_on(state.observed.get(p), name)
        on_s = vm_on(state.observed.get(s), name)
        if (
            on_s is not None
            and on_s.status == "running"
            and (on_p is None or on_p.status in ("postmigrate", "paused", "shutdown"))
        ):
            await self._log(job, "the VM already runs on the target: finishing the migration")
            await self._finish_migration(job, name, p, s)
            await self._wait_converged(job, name)
            return
        await self._log(job, "interrupted before the switch: rolling back to the source")
        await self._rollback_migration(job, name, p, s)
        raise JobError("interrupted by an orchestrator restart; rolled back, VM on " + p)

    async def _replace_disks(
        self, job: JobState, name: InstanceName, params: dict[str, str]
    ) -> None:
        mode = params.get("mode", "change-secondary")
        placement = self.ctx.state.placements.get(name)
        if placement is None:
            raise JobError(f"{name} is not placed")
        if mode == "change-secondary":
            if not any(line.startswith("decided:") for _, line in job.log):
                why = await self.placer.replace_secondary(
                    name,
                    kind=PlacementKind.REPLACE_SECONDARY,
                    reason=f"replace-disks requested by {job.actor}",
                    correlation=job.job_id,
                    target=params.get("node") or None,
                )
                if why:
                    raise JobError(f"no new secondary: {why}")
                new = self.ctx.state.placements[name].secondary
                await self._log(job, f"decided: secondary {placement.secondary} -> {new}")
            await self._wait_converged(job, name)
        elif mode == "secondary-rebuild":
            s = placement.secondary
            for cfg in disk_configs(state=self.ctx.state, instance=name, placement=placement):
                await self._exec(
                    job, Step(kind=StepKind.REMOVE_DISK, node=s, instance=name, disk=cfg)
                )
            await self.prober.probe(s)
            await self._wait_converged(job, name)
        else:
            raise JobError(
                f"replace-disks mode {mode!r} is not supported "
                "(use change-secondary or secondary-rebuild)"
            )

    async def _grow(self, job: JobState, name: InstanceName, params: dict[str, str]) -> None:
        spec = self.ctx.state.desired.instances.get(name)
        if spec is None:
            raise JobError(f"no instance {name}")
        try:
            index = int(params.get("disk", "0"))
            amount = int(params["amount_mib"])
        except (KeyError, ValueError) as exc:
            raise JobError(f"grow-disk needs disk and amount_mib: {exc}") from exc
        if not 0 <= index < len(spec.disks) or amount <= 0:
            raise JobError(f"no disk {index} on {name}, or a non-positive amount")
        if not any(line.startswith("decided:") for _, line in job.log):
            disks = list(spec.disks)
            disks[index] = DiskSpec(size_mib=disks[index].size_mib + amount)
            new_spec = replace(spec, disks=tuple(disks))
            await self.ctx.append(
                [
                    InstanceUpdated(
                        id=new_event_id(),
                        time=self.ctx.now(),
                        actor=job.actor,
                        correlation_id=job.job_id,
                        reason=f"grow-disk {index} by {amount}M",
                        spec=new_spec,
                    )
                ]
            )
            await self._log(job, f"decided: disk {index} -> {disks[index].size_mib}M")
        await self._wait_converged(job, name)

    async def _modified(self, job: JobState, name: InstanceName) -> None:
        """The new spec was recorded with the job: say when it takes effect."""
        spec = self.ctx.state.desired.instances.get(name)
        if spec is None:
            raise JobError(f"no instance {name}")
        placement = self.ctx.state.placements.get(name)
        vm = vm_on(self.ctx.state.observed.get(placement.primary), name) if placement else None
        if (
            vm is not None
            and vm_alive(vm)
            and (vm.memory_mib, vm.vcpus)
            != (
                spec.memory_mib,
                spec.vcpus,
            )
        ):
            await self._log(
                job,
                f"recorded: memory {spec.memory_mib}M, {spec.vcpus} vcpus; {name} runs with "
                f"{vm.memory_mib}M and {vm.vcpus} until its next start "
                f"(`corral instance reboot {name}`)",
            )
            return
        hv = sorted(k for k, _ in job.params if k.startswith("hv."))
        if hv and vm is not None and vm_alive(vm):
            await self._log(
                job,
                f"recorded: {', '.join(k.replace('hv.', 'hvparams.') for k in hv)}; they take "
                f"effect at {name}'s next start (`corral instance reboot {name}`)",
            )
            return
        await self._log(job, f"recorded: memory {spec.memory_mib}M, {spec.vcpus} vcpus")
        await self._wait_converged(job, name)

    async def _hotplug(self, job: JobState, name: InstanceName, params: dict[str, str]) -> None:
        """NICs added to a running instance's spec, hotplugged into its VM one by one.
        A NIC qemu (or the helper) refuses is taken back out of the spec, with the
        ones after it, so the record says what the VM has (the helper undoes its own
        half of a refused hotplug); a NIC found already there (a resumed job, or a
        VM started since with the new spec) counts as plugged."""
        disks = [int(i) for i in params.get("disks", "").split(",") if i.isdigit()]
        if disks:
            await self._add_disks(job, name, disks)
        indexes = [int(i) for i in params.get("nics", "").split(",") if i.isdigit()]
        if not indexes:
            return
        plugged = {line for _, line in job.log if line.startswith("plugged: ")}
        spec = self.ctx.state.desired.instances.get(name)
        placement = self.ctx.state.placements.get(name)
        if spec is None or placement is None:
            raise JobError(f"{name} is not placed")
        node = placement.primary
        if not vm_alive(vm_on(self.ctx.state.observed.get(node), name)):
            await self._log(job, f"{name} is not running: its NICs attach at its next start")
            return
        for i in indexes:
            if f"plugged: nics[{i}]" in plugged or i >= len(spec.nics):
                continue
            step = Step(kind=StepKind.HOTPLUG_NIC, node=node, instance=name, spec=spec, nic_index=i)
            outcome = await self._act(job, step)
            if outcome.ok or f"Duplicate device ID 'nic-n{i}'" in outcome.error:
                await self._log(job, f"plugged: nics[{i}]")
                continue
            if "corral-node-helper: vm-hotplug" not in outcome.error:
                raise JobError(
                    f"hotplug of {name}'s nics[{i}] on {node} did not answer: {outcome.error}; "
                    "the NIC stays recorded and is in the VM from its next start on"
                )
            dropped = [j for j in indexes if j >= i]
            await self._unrecord_nics(job, name, dropped)
            raise JobError(
                f"hotplug of {name}'s nics[{i}] on {node} refused: {outcome.error}; "
                f"{', '.join(f'nics[{j}]' for j in dropped)} taken back out of its spec "
                "(the VM is as it was)"
            )

    async def _add_disks(self, job: JobState, name: InstanceName, indexes: list[int]) -> None:
        """Disks appended to a placed instance's spec: their DRBD pairs placed (new
        minors and ports, decided once) and built by the workers, then, while the VM
        runs, each hotplugged. A disk qemu or the helper refuses is taken back out of
        the spec and the placement with the ones after it, and its pair removed."""
        state = self.ctx.state
        spec, placement = state.desired.instances.get(name), state.placements.get(name)
        if spec is None or placement is None:
            raise JobError(f"{name} is not placed")
        unplaced = [i for i in indexes if len(placement.disks) <= i < len(spec.disks)]
        if unplaced:
            numbers = DiskNumbers.of(state)
            numbers.see(state)
            taken = numbers.take([spec.disks[i] for i in unplaced])
            new = tuple(replace(d, index=i) for i, d in zip(unplaced, taken, strict=True))
            await self.ctx.append(
                [
                    InstancePlaced(
                        id=new_event_id(),
                        time=self.ctx.now(),
                        actor=job.actor,
                        correlation_id=job.job_id,
                        reason=f"disks {unplaced} added to {name}",
                        instance=name,
                        primary=placement.primary,
                        secondary=placement.secondary,
                        disks=placement.disks + new,
                        kind=placement.kind,
                        superseded=placement.superseded,
                    )
                ]
            )
            for d in new:
                await self._log(job, f"decided: disk {d.index} minor {d.minor} port {d.port}")
        await self._wait_converged(job, name)
        state = self.ctx.state
        spec, placement = state.desired.instances.get(name), state.placements.get(name)
        if spec is None or placement is None:
            raise JobError(f"{name} is not placed")
        node = placement.primary
        if not vm_alive(vm_on(state.observed.get(node), name)):
            await self._log(job, f"{name} is not running: its new disks attach at its next start")
            return
        configs = disk_configs(state=state, instance=name, placement=placement)
        started = effective_hv(state=state, spec=spec, node=node)
        done = {line for _, line in job.log if line.startswith("plugged: disk ")}
        for i in indexes:
            if f"plugged: disk {i}" in done or i >= len(configs):
                continue
            step = Step(
                kind=StepKind.HOTPLUG_DISK, node=node, instance=name, spec=started, disk=configs[i]
            )
            outcome = await self._act(job, step)
            if outcome.ok or f"Duplicate device ID 'disk-d{i}'" in outcome.error:
                await self._log(job, f"plugged: disk {i}")
                continue
            if "corral-node-helper: vm-hotplug" not in outcome.error:
                raise JobError(
                    f"hotplug of {name}'s disk {i} on {node} did not answer: {outcome.error}; "
                    "the disk stays recorded and is in the VM from its next start on"
                )
            dropped = [j for j in indexes if j >= i]
            await self._unrecord_disks(job, name, dropped, configs)
            raise JobError(
                f"hotplug of {name}'s disk {i} on {node} refused: {outcome.error}; "
                f"disks {dropped} taken back out of its spec and placement, their DRBD "
                "pairs removed (the VM is as it was)"
            )

    async def _unrecord_disks(
        self, job: JobState, name: InstanceName, dropped: list[int], configs: tuple[DiskConfig, ...]
    ) -> None:
        state = self.ctx.state
        spec, placement = state.desired.instances.get(name), state.placements.get(name)
        if spec is None or placement is None:
            return
        why = f"hotplug refused: disks {dropped} not added to {name}"
        common = {"time": self.ctx.now(), "actor": job.actor, "correlation_id": job.job_id}
        await self.ctx.append(
            [
                InstanceUpdated(
                    id=new_event_id(),
                    reason=why,
                    spec=replace(
                        spec, disks=tuple(d for i, d in enumerate(spec.disks) if i not in dropped)
                    ),
                    **common,  # type: ignore[arg-type]
                ),
                InstancePlaced(
                    id=new_event_id(),
                    reason=why,
                    instance=name,
                    primary=placement.primary,
                    secondary=placement.secondary,
                    disks=tuple(d for d in placement.disks if d.index not in dropped),
                    kind=placement.kind,
                    superseded=placement.superseded,
                    **common,  # type: ignore[arg-type]
                ),
            ]
        )
        for cfg in (c for c in configs if c.index in dropped):
            for node in (placement.primary, placement.secondary):
                await self._act(
                    job, Step(kind=StepKind.REMOVE_DISK, node=node, instance=name, disk=cfg)
                )

    async def _unrecord_nics(self, job: JobState, name: InstanceName, dropped: list[int]) -> None:
        spec = self.ctx.state.desired.instances.get(name)
        if spec is None:
            return
        nics = tuple(n for i, n in enumerate(spec.nics) if i not in dropped)
        await self.ctx.append(
            [
                InstanceUpdated(
                    id=new_event_id(),
                    time=self.ctx.now(),
                    actor=job.actor,
                    correlation_id=job.job_id,
                    reason=f"hotplug refused: nics {dropped} not added to {name}",
                    spec=replace(spec, nics=nics),
                )
            ]
        )

    async def _rename(self, job: JobState, name: InstanceName, new: InstanceName) -> None:
        """Rename a stopped instance: its disks on both nodes, then the record. Once
        the first node command is decided it is finished forward (a failed step is
        tried again until it succeeds), never left half-done: the workers keep off
        both names while the job runs (`workers.instance_locked_by_job`)."""
        state = self.ctx.state
        if name not in state.desired.instances and new in state.desired.instances:
            return  # resumed after the rename was recorded
        if not any(line.startswith("decided:") for _, line in job.log):
            blockers = rename_blockers(state=state, instance=name, new=new)
            if blockers:
                raise JobError(f"{name} cannot be renamed to {new}: " + "; ".join(blockers))
            await self._log(job, f"decided: rename {name} to {new}")
        downs, renames = rename_steps(state=state, instance=name, new=new)
        for step in (*downs, *renames):
            await self._until_done(job, step)
        placement = state.placements.get(name)
        for attempt in itertools.count(1):
            for node in (placement.primary, placement.secondary) if placement else ():
                await self.prober.probe(node)
            missing = rename_missing(state=self.ctx.state, instance=name, new=new)
            if not missing:
                break
            await self._log(job, f"not yet renamed: {'; '.join(missing)}")
            for step in renames:
                await self._until_done(job, step)
            await asyncio.sleep(min(2.0**attempt, 30.0))
        await self.ctx.append(
            [
                InstanceRenamed(
                    id=new_event_id(),
                    time=self.ctx.now(),
                    actor=job.actor,
                    correlation_id=job.job_id,
                    reason=job.reason or f"rename {name} to {new}",
                    instance=name,
                    new_name=new,
                )
            ]
        )
        await self._log(job, f"renamed {name} to {new}; it starts as {new}")

    async def _until_done(self, job: JobState, step: Step) -> None:
        """Run `step` until it succeeds (its node unreachable: again after a pause);
        a step on a fenced node is skipped, its copy rebuilt when it returns."""
        attempt = 0
        while not (await self._act(job, step)).ok:
            if node_fenced(self.ctx.state, step.node):
                await self._log(job, f"{step.node} is fenced: skipped {step.summary}")
                return
            attempt += 1
            await asyncio.sleep(min(2.0**attempt, 30.0))

    async def _reinstalled(self, job: JobState, name: InstanceName) -> None:
        """The plan stops the VM, writes the image and the seed, starts it: wait for
        that (a failed install fails the job, naming image and node)."""
        await self._wait_converged(job, name)
        pending = self.ctx.state.installs.get(name)
        if pending is None or not pending.done:
            raise JobError(f"{name}: the OS image was not written")
        await self._log(job, f"{name}: OS image {pending.image} written and started")

    # ------------------------------------------------------------------ node jobs

    async def _node_job(self, job: JobState, node: NodeName, kind: str) -> None:
        state = self.ctx.state
        primaries = sorted(n for n, p in state.placements.items() if p.primary == node)
        secondaries = sorted(n for n, p in state.placements.items() if p.secondary == node)
        failed: list[str] = []
        for name in primaries:
            sub = replace(job, log=())
            try:
                if kind == "node.failover":
                    await self._failover(sub, name)
                else:
                    running = vm_alive(vm_on(self.ctx.state.observed.get(node), name))
                    if running:
                        # the workers keep off it while the migration is driven
                        # here (this job's targets are the node, not the instance)
                        async with self.workers.hold(name):
                            await self._live_migrate(sub, name)
                        await self._wait_converged(sub, name)
                    else:
                        await self._failover(sub, name)
                await self._log(job, f"{name}: primary moved off {node}")
            except JobError as exc:
                failed.append(f"{name}: {exc}")
                await self._log(job, f"{name}: FAILED {exc}")
        if kind == "node.evacuate":
            state = self.ctx.state
            movers = sorted(
                n for n, p in state.placements.items() if p.secondary == node or n in secondaries
            )
            for name in movers:
                if state.placements[name].secondary != node:
                    continue
                why = await self.placer.replace_secondary(
                    name,
                    kind=PlacementKind.REPLACE_SECONDARY,
                    reason=f"evacuating {node}",
                    correlation=job.job_id,
                )
                if why:
                    failed.append(f"{name}: {why}")
                    await self._log(job, f"{name}: no new secondary: {why}")
                else:
                    await self._log(
                        job, f"{name}: secondary -> {self.ctx.state.placements[name].secondary}"
                    )
            for name in movers:
                try:
                    await self._wait_converged(replace(job, log=()), name)
                except JobError as exc:
                    failed.append(f"{name}: {exc}")
        if failed:
            raise JobError(f"{len(failed)} instance(s) not moved: " + "; ".join(failed[:5]))
