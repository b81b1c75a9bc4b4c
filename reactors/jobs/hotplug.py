"""The hotplug job: NICs and disks appended to a placed instance's spec, brought into
its running VM one by one (new disks first get their DRBD pairs: minors and ports
decided once, pairs built by the workers). A device qemu or the node helper refuses
is taken back out of the spec (and, for a disk, the placement, its pair removed),
with the ones after it, so the record says what the VM has; a device found already
there (a resumed job, or a VM started since with the new spec) counts as plugged.
Must not take a device out of the record when its node did not answer: it stays
recorded and is in the VM from its next start on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from events.ids import InstanceName
from events.state import JobState
from reactors.jobs.acts import JobActs, JobError
from reactors.naming import DiskNumbers
from reactors.plans.queries import vm_alive, vm_on
from reactors.plans.steps import DiskConfig, Step, StepKind, disk_configs, effective_hv


@dataclass(frozen=True)
class Hotplug:
    acts: JobActs

    async def run(self, job: JobState, name: InstanceName, params: dict[str, str]) -> None:
        disks = [int(i) for i in params.get("disks", "").split(",") if i.isdigit()]
        if disks:
            await self._add_disks(job, name, disks)
        indexes = [int(i) for i in params.get("nics", "").split(",") if i.isdigit()]
        if indexes:
            await self._add_nics(job, name, indexes)

    async def _plug(
        self, job: JobState, step: Step, *, label: str, what: str, device_id: str
    ) -> str:
        """Hotplug the device of `step` (a `what`, "NIC" or "disk", qemu's id
        `device_id`; `label` in the log: "nics[1]", "disk 2");
        "" once it is in the VM, else the node helper's refusal. Raises when the
        node did not answer."""
        outcome = await self.acts.act(job, step)
        if outcome.ok or f"Duplicate device ID '{device_id}'" in outcome.error:
            await self.acts.log(job, f"plugged: {label}")
            return ""
        if "corral-node-helper: vm-hotplug" not in outcome.error:
            raise JobError(
                f"hotplug of {step.instance}'s {label} on {step.node} did not answer: "
                f"{outcome.error}; the {what} stays recorded and is in the VM from its next "
                "start on"
            )
        return outcome.error

    async def _add_nics(self, job: JobState, name: InstanceName, indexes: list[int]) -> None:
        plugged = {line for _, line in job.log if line.startswith("plugged: ")}
        state = self.acts.ctx.state
        spec = state.desired.instances.get(name)
        placement = state.placements.get(name)
        if spec is None or placement is None:
            raise JobError(f"{name} is not placed")
        node = placement.primary
        if not vm_alive(vm_on(state.observed.get(node), name)):
            await self.acts.log(job, f"{name} is not running: its NICs attach at its next start")
            return
        started = effective_hv(state=state, spec=spec, node=node)  # the NIC's nic_type
        for i in indexes:
            if f"plugged: nics[{i}]" in plugged or i >= len(spec.nics):
                continue
            step = Step(
                kind=StepKind.HOTPLUG_NIC, node=node, instance=name, spec=started, nic_index=i
            )
            refused = await self._plug(
                job, step, label=f"nics[{i}]", what="NIC", device_id=f"nic-n{i}"
            )
            if not refused:
                continue
            dropped = [j for j in indexes if j >= i]
            await self._unrecord_nics(job, name, dropped)
            raise JobError(
                f"hotplug of {name}'s nics[{i}] on {node} refused: {refused}; "
                f"{', '.join(f'nics[{j}]' for j in dropped)} taken back out of its spec "
                "(the VM is as it was)"
            )

    async def _place_disks(self, job: JobState, name: InstanceName, indexes: list[int]) -> None:
        """New disks of `indexes` not placed yet get their minors and ports, once."""
        ctx = self.acts.ctx
        state = ctx.state
        spec, placement = state.desired.instances.get(name), state.placements.get(name)
        if spec is None or placement is None:
            raise JobError(f"{name} is not placed")
        unplaced = [i for i in indexes if len(placement.disks) <= i < len(spec.disks)]
        if not unplaced:
            return
        numbers = DiskNumbers.of(state)
        numbers.see(state)
        taken = numbers.take([spec.disks[i] for i in unplaced])
        new = tuple(replace(d, index=i) for i, d in zip(unplaced, taken, strict=True))
        why = f"disks {unplaced} added to {name}"
        await ctx.append(
            [self.acts.disks_placed(job, name, placement, placement.disks + new, reason=why)]
        )
        for d in new:
            await self.acts.log(job, f"decided: disk {d.index} minor {d.minor} port {d.port}")

    async def _add_disks(self, job: JobState, name: InstanceName, indexes: list[int]) -> None:
        await self._place_disks(job, name, indexes)
        await self.acts.wait_converged(job, name)
        state = self.acts.ctx.state
        spec, placement = state.desired.instances.get(name), state.placements.get(name)
        if spec is None or placement is None:
            raise JobError(f"{name} is not placed")
        node = placement.primary
        if not vm_alive(vm_on(state.observed.get(node), name)):
            await self.acts.log(
                job, f"{name} is not running: its new disks attach at its next start"
            )
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
            refused = await self._plug(
                job, step, label=f"disk {i}", what="disk", device_id=f"disk-d{i}"
            )
            if not refused:
                continue
            dropped = [j for j in indexes if j >= i]
            await self._unrecord_disks(job, name, dropped, configs)
            raise JobError(
                f"hotplug of {name}'s disk {i} on {node} refused: {refused}; "
                f"disks {dropped} taken back out of its spec and placement, their DRBD "
                "pairs removed (the VM is as it was)"
            )

    async def _unrecord_disks(
        self, job: JobState, name: InstanceName, dropped: list[int], configs: tuple[DiskConfig, ...]
    ) -> None:
        ctx = self.acts.ctx
        state = ctx.state
        spec, placement = state.desired.instances.get(name), state.placements.get(name)
        if spec is None or placement is None:
            return
        why = f"hotplug refused: disks {dropped} not added to {name}"
        kept = tuple(d for i, d in enumerate(spec.disks) if i not in dropped)
        placed = tuple(d for d in placement.disks if d.index not in dropped)
        await ctx.append(
            [
                self.acts.spec_recorded(job, replace(spec, disks=kept), reason=why),
                self.acts.disks_placed(job, name, placement, placed, reason=why),
            ]
        )
        for cfg in (c for c in configs if c.index in dropped):
            for node in (placement.primary, placement.secondary):
                await self.acts.act(
                    job, Step(kind=StepKind.REMOVE_DISK, node=node, instance=name, disk=cfg)
                )
        # Seen gone before the next pass plans: a disk added again at once (under a
        # new minor) must not be taken for the removed pair.
        for node in (placement.primary, placement.secondary):
            await self.acts.prober.probe(node)

    async def _unrecord_nics(self, job: JobState, name: InstanceName, dropped: list[int]) -> None:
        ctx = self.acts.ctx
        spec = ctx.state.desired.instances.get(name)
        if spec is None:
            return
        nics = tuple(n for i, n in enumerate(spec.nics) if i not in dropped)
        why = f"hotplug refused: nics {dropped} not added to {name}"
        await ctx.append([self.acts.spec_recorded(job, replace(spec, nics=nics), reason=why)])
