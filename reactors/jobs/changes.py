"""The jobs that change an instance in place: grow a disk (the bigger spec recorded,
then converged), modify (the new spec, memory, vCPUs, hvparams or NICs, was
recorded with the job: say when it takes effect), rename a stopped instance (its
disks on both nodes, its Ganeti OS definition's rename script, then the record)
and reinstall (wait for the planned install).
Hotplug is `reactors.jobs.hotplug`, disk removal `reactors.jobs.disk_removal`.
Must not leave a rename half-done once its first node command is decided.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, replace

from events.ids import InstanceName, new_event_id
from events.model import InstanceRenamed
from events.specs import DiskSpec, PowerState
from events.state import JobState
from reactors.jobs.acts import JobActs, JobError, decided
from reactors.plans.queries import node_fenced, vm_alive, vm_on
from reactors.plans.rename import (
    os_rename_steps,
    rename_blockers,
    rename_missing,
    rename_steps,
)
from reactors.plans.steps import Step


@dataclass(frozen=True)
class Changes:
    acts: JobActs

    async def grow(self, job: JobState, name: InstanceName, params: dict[str, str]) -> None:
        ctx = self.acts.ctx
        spec = ctx.state.desired.instances.get(name)
        if spec is None:
            raise JobError(f"no instance {name}")
        try:
            index = int(params.get("disk", "0"))
            amount = int(params["amount_mib"])
        except (KeyError, ValueError) as exc:
            raise JobError(f"grow-disk needs disk and amount_mib: {exc}") from exc
        if not 0 <= index < len(spec.disks) or amount <= 0:
            raise JobError(f"no disk {index} on {name}, or a non-positive amount")
        if not decided(job):
            disks = list(spec.disks)
            disks[index] = DiskSpec(size_mib=disks[index].size_mib + amount)
            new_spec = replace(spec, disks=tuple(disks))
            why = f"grow-disk {index} by {amount}M"
            grown = [self.acts.spec_recorded(job, new_spec, reason=why)]
            await self.acts.decide(job, grown, f"disk {index} -> {disks[index].size_mib}M")
        await self.acts.wait_converged(job, name)

    async def modified(self, job: JobState, name: InstanceName) -> None:
        """The new spec was recorded with the job: say when it takes effect."""
        state = self.acts.ctx.state
        spec = state.desired.instances.get(name)
        if spec is None:
            raise JobError(f"no instance {name}")
        placement = state.placements.get(name)
        vm = vm_on(state.observed.get(placement.primary), name) if placement else None
        if any(k == "nics" for k, _ in job.params):
            nics = ", ".join(f"{n.link}/{n.mac}" for n in spec.nics) or "none"
            if vm is not None and vm_alive(vm):
                await self.acts.log(
                    job,
                    f"recorded: nics [{nics}]; {name} keeps the NICs it started with until "
                    f"its next start (`corral instance reboot {name}`)",
                )
                return
            await self.acts.log(job, f"recorded: nics [{nics}]; they attach at its next start")
            await self.acts.wait_converged(job, name)
            return
        if (
            vm is not None
            and vm_alive(vm)
            and (vm.memory_mib, vm.vcpus) != (spec.memory_mib, spec.vcpus)
        ):
            await self.acts.log(
                job,
                f"recorded: memory {spec.memory_mib}M, {spec.vcpus} vcpus; {name} runs with "
                f"{vm.memory_mib}M and {vm.vcpus} until its next start "
                f"(`corral instance reboot {name}`)",
            )
            return
        hv = sorted(k for k, _ in job.params if k.startswith("hv."))
        if hv and vm is not None and vm_alive(vm):
            await self.acts.log(
                job,
                f"recorded: {', '.join(k.replace('hv.', 'hvparams.') for k in hv)}; they take "
                f"effect at {name}'s next start (`corral instance reboot {name}`)",
            )
            return
        await self.acts.log(job, f"recorded: memory {spec.memory_mib}M, {spec.vcpus} vcpus")
        await self.acts.wait_converged(job, name)

    async def rename(self, job: JobState, name: InstanceName, new: InstanceName) -> None:
        """Rename a stopped instance: its disks on both nodes, then the record. Once
        the first node command is decided it is finished forward (a failed step is
        tried again until it succeeds), never left half-done: the workers keep off
        both names while the job runs (`workers.instance_locked_by_job`)."""
        acts, ctx = self.acts, self.acts.ctx
        state = ctx.state
        if name not in state.desired.instances and new in state.desired.instances:
            return  # resumed after the rename was recorded
        if not decided(job):
            blockers = rename_blockers(state=state, instance=name, new=new)
            if blockers:
                raise JobError(f"{name} cannot be renamed to {new}: " + "; ".join(blockers))
            await acts.log(job, f"decided: rename {name} to {new}")
        downs, renames = rename_steps(state=state, instance=name, new=new)
        for step in (*downs, *renames):
            await self._until_done(job, step)
        placement = state.placements.get(name)
        for attempt in itertools.count(1):
            for node in (placement.primary, placement.secondary) if placement else ():
                await acts.prober.probe(node)
            missing = rename_missing(state=ctx.state, instance=name, new=new)
            if not missing:
                break
            await acts.log(job, f"not yet renamed: {'; '.join(missing)}")
            for step in renames:
                await self._until_done(job, step)
            await asyncio.sleep(min(2.0**attempt, 30.0))
        await self._os_rename(job, name, new)
        await ctx.append(
            [
                InstanceRenamed(
                    id=new_event_id(),
                    time=ctx.now(),
                    actor=job.actor,
                    correlation_id=job.job_id,
                    reason=job.reason or f"rename {name} to {new}",
                    instance=name,
                    new_name=new,
                )
            ]
        )
        await acts.log(job, f"renamed {name} to {new}; it starts as {new}")

    async def _os_rename(self, job: JobState, name: InstanceName, new: InstanceName) -> None:
        """The OS definition's rename script on the primary, its disks Primary
        there for it. As in Ganeti, a failed script is said, not fatal: the
        instance is renamed all the same (its guest keeps the old hostname)."""
        steps = os_rename_steps(state=self.acts.ctx.state, instance=name, new=new)
        if steps is None:
            return
        promote, run, demote = steps
        promoted = True
        for step in promote:
            promoted = promoted and (await self.acts.act(job, step)).ok
        outcome = await self.acts.act(job, run) if promoted else None
        for step in demote:
            await self._until_done(job, step)
        if outcome is None or not outcome.ok:
            why = outcome.error if outcome is not None else "its disks could not be made Primary"
            await self.acts.log(
                job,
                f"WARNING: the OS rename script of {new} did not run through ({why}); "
                "the instance is renamed, its guest may still use the old name",
            )

    async def _until_done(self, job: JobState, step: Step) -> None:
        """Run `step` until it succeeds (its node unreachable: again after a pause);
        a step on a fenced node is skipped, its copy rebuilt when it returns."""
        attempt = 0
        while not (await self.acts.act(job, step)).ok:
            if node_fenced(self.acts.ctx.state, step.node):
                await self.acts.log(job, f"{step.node} is fenced: skipped {step.summary}")
                return
            attempt += 1
            await asyncio.sleep(min(2.0**attempt, 30.0))

    async def reinstalled(self, job: JobState, name: InstanceName) -> None:
        """The plan stops the VM, writes the image and the seed, starts it (a stopped
        instance's disk is made Primary for the write and it stays stopped): wait for
        that (a failed install fails the job, naming image and node)."""
        await self.acts.wait_converged(job, name)
        state = self.acts.ctx.state
        pending = state.installs.get(name)
        if pending is None or not pending.done:
            raise JobError(f"{name}: the OS image was not written")
        spec = state.desired.instances.get(name)
        started = spec is not None and spec.power == PowerState.RUNNING
        done = "written and started" if started else "written (the instance stays stopped)"
        what = "OS image"
        if spec is not None and spec.image is not None and spec.image.ganeti_os:
            what = "OS definition"
            done = done.replace("written", "installed")
        await self.acts.log(job, f"{name}: {what} {pending.image} {done}")
