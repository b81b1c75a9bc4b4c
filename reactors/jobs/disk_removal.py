"""The `instance.remove-disk` job: the last disk of a stopped instance taken out of
its record first (its spec and placement, one append with the job's decision),
then its DRBD resource brought down and its LV removed on both nodes, until the
nodes report neither. Once decided it is finished forward: a resumed job (a new
leader, a restart) runs the node steps again, each safe to repeat, and a node that
does not answer is tried again after a pause until it does.

Must not touch the nodes before the removal is recorded, nor record it while the
instance runs (a VM stopping for the same apply is waited for first).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, replace

from events.ids import InstanceName, NodeName
from events.model import Event
from events.specs import PowerState
from events.state import JobState
from reactors.jobs.acts import JobActs, JobError, decided
from reactors.naming import disk_name
from reactors.plans.disk_removal import removal_blockers, removal_left, removal_steps
from reactors.plans.queries import nodes_running


@dataclass(frozen=True)
class DiskRemoval:
    acts: JobActs

    async def run(self, job: JobState, name: InstanceName, params: dict[str, str]) -> None:
        try:
            index = int(params["disk"])
        except (KeyError, ValueError) as exc:
            raise JobError(f"remove-disk needs the disk's index: {exc}") from exc
        if not decided(job):
            await self._decide(job, name, index)
        placement = self.acts.ctx.state.placements.get(name)
        if placement is None:
            await self.acts.log(job, f"{name} is not placed: no node holds disk {index}")
            return
        nodes = (placement.primary, placement.secondary)
        await self._remove(job, name, index, nodes)

    async def _decide(self, job: JobState, name: InstanceName, index: int) -> None:
        acts = self.acts
        spec = acts.ctx.state.desired.instances.get(name)
        stopping = spec is not None and spec.power is PowerState.STOPPED
        if stopping and nodes_running(acts.ctx.state, name):
            await acts.log(job, f"waiting for {name} to stop")
            await acts.wait_converged(job, name)
        state = acts.ctx.state
        blockers = removal_blockers(state=state, instance=name, index=index)
        spec = state.desired.instances.get(name)
        if blockers or spec is None:
            raise JobError(f"disk {index} of {name} cannot be removed: " + "; ".join(blockers))
        why = f"disk {index} ({disk_name(name, index)}) removed from {name}"
        recorded: list[Event] = [
            acts.spec_recorded(job, replace(spec, disks=spec.disks[:index]), reason=why)
        ]
        placement = state.placements.get(name)
        if placement is not None:
            kept = tuple(d for d in placement.disks if d.index != index)
            recorded.append(acts.disks_placed(job, name, placement, kept, reason=why))
        await acts.decide(job, recorded, f"remove disk {index} of {name}")

    async def _remove(
        self, job: JobState, name: InstanceName, index: int, nodes: tuple[NodeName, ...]
    ) -> None:
        acts = self.acts
        for attempt in itertools.count(1):
            for step in removal_steps(
                state=acts.ctx.state, instance=name, index=index, nodes=nodes
            ):
                await acts.act(job, step)
            for node in nodes:
                await acts.prober.probe(node)
            left = removal_left(state=acts.ctx.state, instance=name, index=index, nodes=nodes)
            if not left:
                break
            await acts.log(job, f"not yet removed: {'; '.join(left)}; trying again")
            await asyncio.sleep(min(2.0**attempt, 30.0))
        await acts.log(
            job, f"removed disk {index} of {name}: its DRBD resource and LV on {', '.join(nodes)}"
        )
