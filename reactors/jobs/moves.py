"""The jobs that move an instance or its copies between nodes: reboot, failover, live
migration (or failover of a stopped VM), replace-disks, and the node jobs (migrate,
failover, evacuate every instance of a node). Most only record a decision (a new
placement) and wait for the instance workers to converge. A migration or failover is
refused, changing nothing, when its target is unreachable, holds a disk not UpToDate,
or has too little free memory for the instance (as Ganeti checks), counting the moves
to that node under way. Must not drive nodes step by step where a new placement
does: only a reboot's stop, a secondary rebuild's disk removal and a live migration
(`reactors.jobs.migration`) run node steps here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from events.ids import InstanceName, NodeName
from events.model import PlacementKind
from events.state import JobState
from reactors.jobs.acts import JobActs, JobError, decided
from reactors.jobs.migration import Migrations, swapped
from reactors.placement.allocator import run_refusal
from reactors.placer import Placer
from reactors.plans.queries import drbd_on, node_actionable, vm_alive, vm_on
from reactors.plans.steps import Step, StepKind, disk_configs


@dataclass
class Moves:
    acts: JobActs
    placer: Placer
    migrations: Migrations
    # instances a migration or failover here is bringing to a node, with their
    # memory, until the new placement is in the state: two moves to one node
    # at once must both fit there
    _incoming: dict[InstanceName, tuple[NodeName, int]] = field(default_factory=dict)

    async def reboot(self, job: JobState, name: InstanceName) -> None:
        acts = self.acts
        placement = acts.ctx.state.placements.get(name)
        if placement is None:
            raise JobError(f"{name} is not placed")
        obs = acts.ctx.state.observed.get(placement.primary)
        if vm_alive(vm_on(obs, name)):
            stop = Step(kind=StepKind.STOP_VM, node=placement.primary, instance=name, note="reboot")
            await acts.exec(job, stop)
            await acts.prober.probe(placement.primary)
        await acts.wait_converged(job, name)

    @contextmanager
    def _failing_over(self, name: InstanceName) -> Iterator[tuple[NodeName, NodeName]]:
        """Checks that `name` can move to its secondary (reachable, every disk
        UpToDate there, memory free for it, counting the moves to that node
        under way); (primary, secondary). Until this ends, `name`'s memory
        counts as taken on the secondary, for the other moves' checks."""
        state = self.acts.ctx.state
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

    async def failover(self, job: JobState, name: InstanceName) -> None:
        if not decided(job):
            ctx = self.acts.ctx
            with self._failing_over(name) as (p, s):
                why = f"{job.kind} requested by {job.actor}: {job.reason}".strip(": ")
                kind = PlacementKind.FAILOVER
                decision = [swapped(ctx, job, name, p=p, s=s, kind=kind, reason=why)]
                await self.acts.decide(job, decision, f"primary {p} -> {s}")
        await self.acts.wait_converged(job, name)

    async def live_migrate(self, job: JobState, name: InstanceName) -> None:
        with self._failing_over(name) as (p, s):
            await self.migrations.live(job, name, p, s)

    async def migrate_or_failover(
        self, job: JobState, name: InstanceName, *, resumed: bool
    ) -> None:
        state = self.acts.ctx.state
        placement = state.placements.get(name)
        if placement is None:
            raise JobError(f"{name} is not placed")
        if resumed:
            await self.migrations.recover(job, name)
            return
        if not vm_alive(vm_on(state.observed.get(placement.primary), name)):
            await self.acts.log(job, f"{name} is not running: failing over instead of migrating")
            await self.failover(job, name)
            return
        await self.live_migrate(job, name)

    async def replace_disks(
        self, job: JobState, name: InstanceName, params: dict[str, str]
    ) -> None:
        acts = self.acts
        mode = params.get("mode", "change-secondary")
        placement = acts.ctx.state.placements.get(name)
        if placement is None:
            raise JobError(f"{name} is not placed")
        if mode == "change-secondary":
            if not decided(job):
                old = placement.secondary
                why = await self.placer.replace_secondary(
                    name,
                    kind=PlacementKind.REPLACE_SECONDARY,
                    reason=f"replace-disks requested by {job.actor}",
                    correlation=job.job_id,
                    target=params.get("node") or None,
                    with_it=lambda new: [acts.decided_line(job, f"secondary {old} -> {new}")],
                )
                if why:
                    raise JobError(f"no new secondary: {why}")
            await acts.wait_converged(job, name)
        elif mode == "secondary-rebuild":
            s = placement.secondary
            for cfg in disk_configs(state=acts.ctx.state, instance=name, placement=placement):
                await acts.exec(
                    job, Step(kind=StepKind.REMOVE_DISK, node=s, instance=name, disk=cfg)
                )
            await acts.prober.probe(s)
            await acts.wait_converged(job, name)
        else:
            raise JobError(
                f"replace-disks mode {mode!r} is not supported "
                "(use change-secondary or secondary-rebuild)"
            )

    # ------------------------------------------------------------------ node jobs

    async def node_job(self, job: JobState, node: NodeName, kind: str) -> None:
        state = self.acts.ctx.state
        primaries = sorted(n for n, p in state.placements.items() if p.primary == node)
        secondaries = sorted(n for n, p in state.placements.items() if p.secondary == node)
        failed = await self._primaries_off(job, node, kind, primaries)
        if kind == "node.evacuate":
            failed += await self._secondaries_off(job, node, secondaries)
        if failed:
            raise JobError(f"{len(failed)} instance(s) not moved: " + "; ".join(failed[:5]))

    async def _primaries_off(
        self, job: JobState, node: NodeName, kind: str, primaries: list[InstanceName]
    ) -> list[str]:
        """Fail over or migrate each of `primaries` off `node`; what failed."""
        acts = self.acts
        failed: list[str] = []
        for name in primaries:
            sub = replace(job, log=())
            try:
                if kind == "node.failover":
                    await self.failover(sub, name)
                else:
                    running = vm_alive(vm_on(acts.ctx.state.observed.get(node), name))
                    if running:
                        # the workers keep off it while the migration is driven
                        # here (this job's targets are the node, not the instance)
                        async with acts.workers.hold(name):
                            await self.live_migrate(sub, name)
                        await acts.wait_converged(sub, name)
                    else:
                        await self.failover(sub, name)
                await acts.log(job, f"{name}: primary moved off {node}")
            except JobError as exc:
                failed.append(f"{name}: {exc}")
                await acts.log(job, f"{name}: FAILED {exc}")
        return failed

    async def _secondaries_off(
        self, job: JobState, node: NodeName, secondaries: list[InstanceName]
    ) -> list[str]:
        """Give every instance whose secondary is `node` a new one, and wait for the
        copies to be built; what failed."""
        acts = self.acts
        failed: list[str] = []
        state = acts.ctx.state
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
                await acts.log(job, f"{name}: no new secondary: {why}")
            else:
                await acts.log(
                    job, f"{name}: secondary -> {acts.ctx.state.placements[name].secondary}"
                )
        for name in movers:
            try:
                await acts.wait_converged(replace(job, log=()), name)
            except JobError as exc:
                failed.append(f"{name}: {exc}")
        return failed
