"""Instance workers: one reconcile loop per instance at a time (kopf-style), woken
by events that touch the instance and by a periodic resync (level-triggered). Each
pass plans from the folded state (`reactors.plans.instance`), carries out the steps
whose preconditions hold, records StepStarted/StepSucceeded/StepFailed, probes the
nodes it touched (act, then verify) and plans again.

Must not decide anything itself: decisions live in the pure planner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import structlog

from events.ids import InstanceName, NodeName, new_event_id
from events.model import (
    AlertCleared,
    AlertRaised,
    Event,
    StepFailed,
    StepStarted,
    StepSucceeded,
    instance_key,
)
from events.state import ClusterState, JobState, NodeObservation
from reactors.context import ReactorContext, instances_touching_node
from reactors.ending import cancel_all
from reactors.plans.inputs import PlanInputs, plan_inputs
from reactors.plans.install import install_events
from reactors.plans.instance import plan_instance
from reactors.plans.seen import instances_changed
from reactors.plans.steps import InstancePlan, Step, StepKind
from reactors.prober import Prober

# Alerts a plan raises and that end by themselves when the plan stops raising them.
PLANNER_ALERT_PREFIXES = ("error-down:",)

log = structlog.get_logger("corral.workers")

_ACTIVE_JOB_STATES = ("running", "canceling")

# The line a job writes to its log when its decision is recorded (a new placement,
# a new secondary, a rename...): a job resumed by another leader reads it to go on
# from there rather than decide again.
DECIDED = "decided:"


def job_decided(job: JobState) -> bool:
    """Whether `job` has recorded its decision (a "decided:" line in its log)."""
    return any(line.startswith(DECIDED) for _, line in job.log)


def instance_locked_by_job(state: ClusterState, instance: InstanceName) -> str | None:
    """A running job (live migration...) owns the instance; workers keep off it."""
    key = instance_key(instance)
    for job in state.jobs.values():
        if job.status not in _ACTIVE_JOB_STATES or not _drives_instance(job):
            continue
        if key in job.targets or (
            job.kind == "instance.rename" and dict(job.params).get("new_name") == instance
        ):
            return job.job_id
    return None


def _drives_instance(job: JobState) -> bool:
    """Whether `job` drives its instance step by step itself right now (other
    jobs, failover, replace secondary, grow, only record decisions and let the
    workers converge them).

    A rename does for its whole run (its decision comes before its node commands,
    and it holds the new name too: its disks appear under it before the record).
    A live migration does until its placement is decided: then the VM runs on the
    target and the source is demoted (or the job found the VM not running and chose
    a plain failover instead), and the job only waits for the workers to converge
    the new placement. Kept off after that, the workers never did, and the job waited
    for them until its converge timeout (make chaos seed 58: an instance left
    unconverged after a migration fell back to a failover)."""
    if job.kind == "instance.rename":
        return True
    return job.kind == "instance.migrate" and not job_decided(job)


# How long a term's end waits for its reconcile passes to end.
PASSES_END_WITHIN_S = 10.0


@dataclass
class InstanceWorkers:
    ctx: ReactorContext
    prober: Prober
    _dirty: set[InstanceName] = field(default_factory=set)
    _running: dict[InstanceName, asyncio.Task[None]] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _retry_at: dict[InstanceName, float] = field(default_factory=dict)
    # Called with the seconds each reconcile pass took (the service feeds /metrics).
    on_reconcile: Callable[[float], None] | None = None
    # Instances a job drives step by step right now (`hold`): no pass runs on them.
    _held: set[InstanceName] = field(default_factory=set)
    last_plans: dict[InstanceName, InstancePlan] = field(default_factory=dict)
    # The inputs of each instance's last pass whose plan was converged (nothing to
    # do, nothing waited for): a pass asked for while they are still the same
    # would plan the same and is skipped, without a task. Forgotten at every full
    # resync (`ReactorSettings.full_resync_interval_s`), when a job lets go of the
    # instance, and whenever a pass finds them changed.
    _settled: dict[InstanceName, PlanInputs] = field(default_factory=dict)
    # Each node's observation as the last event about the node left it; a node
    # that leaves the cluster is forgotten.
    _node_seen: dict[NodeName, NodeObservation | None] = field(default_factory=dict)
    # The inputs `_unchanged` found changed, with the state they were read from:
    # the pass that follows reuses them while the state is still that one.
    _checked: dict[InstanceName, PlanInputs] = field(default_factory=dict)
    _checked_state: ClusterState | None = None
    # Passes skipped so (for the bench and the tests).
    skipped: int = 0

    @contextlib.asynccontextmanager
    async def hold(self, name: InstanceName) -> AsyncIterator[None]:
        """Keep every reconcile pass off `name` while a job drives it itself
        (a live migration inside a node job, whose targets are the node): waits
        for a pass already running on it to end first, and marks it for a pass
        when the job lets go."""
        self._held.add(name)
        try:
            running = self._running.get(name)
            if running is not None:
                await asyncio.wait({running})
            yield
        finally:
            self._held.discard(name)
            self._settled.pop(name, None)
            self.mark(name)

    def mark(self, *names: InstanceName) -> None:
        self._dirty.update(names)
        self._wake.set()

    def mark_all(self) -> None:
        state = self.ctx.state
        names = set(state.desired.instances) | set(state.placements)
        for node in state.observed:
            names |= instances_touching_node(state, node)
        self.mark(*names)

    def on_event(self, event: Event, state: ClusterState) -> None:
        for key in event.objects():
            kind, _, name = key.partition("/")
            if kind == "instance":
                self.mark(InstanceName(name))
            elif kind == "node":
                self._node_changed(NodeName(name), state)
            elif kind == "cluster":
                self.mark_all()

    def _node_changed(self, node: NodeName, state: ClusterState) -> None:
        """A node's record changed: mark the instances placed there or reported
        there; after a probe's report (its health unchanged), only those whose own
        VM, DRBD resources or LVs it changed (what else a node reports plans
        nothing: with 40 instances a node and every node reporting each second
        while a cluster converges, marking them all was most of the passes).
        What this misses, the resync finds (`_unchanged` compares everything a
        plan reads)."""
        before = self._node_seen.get(node)
        now = state.observed.get(node)
        if node in state.desired.nodes:
            self._node_seen[node] = now
        else:  # removed (or never declared): nothing to keep for it
            self._node_seen.pop(node, None)
        changed = None
        if before is not None and now is not None:
            changed = instances_changed(before, now)
        self.mark(*(instances_touching_node(state, node) if changed is None else changed))

    async def run(self) -> None:
        sem = asyncio.Semaphore(self.ctx.settings.max_parallel_instances)
        resync = asyncio.create_task(self._resync())
        try:
            while not self.ctx.stopping:
                await self._wake.wait()
                self._wake.clear()
                now = self.ctx.now()
                for name in sorted(self._dirty):
                    if name in self._running:
                        continue  # it will be re-run when the current pass ends
                    if self._retry_at.get(name, 0.0) > now:
                        continue
                    self._dirty.discard(name)
                    if self._unchanged(name):
                        self.skipped += 1
                        continue
                    self._running[name] = asyncio.create_task(self._pass(name, sem))
        finally:
            # The term's end waits for its passes, however often it is
            # cancelled meanwhile (cancel_all cancels again every half second):
            # a pass that lost its cancellation would run on beside the next
            # term's passes.
            ending = asyncio.ensure_future(cancel_all([resync, *self._running.values()]))
            deadline = time.monotonic() + PASSES_END_WITHIN_S
            while not ending.done() and time.monotonic() < deadline:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({ending}, timeout=deadline - time.monotonic())
            if ending.done():
                ending.result()
            else:  # never seen: say so rather than hold the term's end forever
                log.error("reconcile passes outlive their term", instances=sorted(self._running))
                ending.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _unchanged(self, name: InstanceName) -> bool:
        """Whether `name` converged at its last pass and the state it plans from is
        still what that pass read."""
        settled = self._settled.get(name)
        if settled is None or name in self._held:
            return False
        state = self.ctx.state
        inputs = plan_inputs(state, name)
        if settled == inputs:
            return True
        del self._settled[name]
        if self._checked_state is not state:
            # only the current state's are kept: an older one would pin that
            # whole state in memory for an instance whose pass never came
            self._checked.clear()
            self._checked_state = state
        self._checked[name] = inputs
        return False

    async def _resync(self) -> None:
        """Level-triggered: every instance is asked for a pass each resync
        interval (those whose inputs are unchanged since a converged pass skip
        it), and every full-resync interval every instance is planned again
        whatever its inputs."""
        settings = self.ctx.settings
        last_full = time.monotonic()
        while not self.ctx.stopping:
            await asyncio.sleep(settings.resync_interval_s)
            if time.monotonic() - last_full >= settings.full_resync_interval_s:
                last_full = time.monotonic()
                self._settled.clear()
            self.mark_all()

    async def _pass(self, name: InstanceName, sem: asyncio.Semaphore) -> None:
        try:
            async with sem:
                started = time.monotonic()
                await self.reconcile_once(name)
                if self.on_reconcile is not None:
                    self.on_reconcile(time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconcile pass crashed", instance=name)
            self._retry_at[name] = self.ctx.now() + 5.0
        finally:
            self._running.pop(name, None)
            if name in self._dirty:
                self._wake.set()

    async def reconcile_once(self, name: InstanceName) -> InstancePlan | None:
        state = self.ctx.state
        checked = self._checked.pop(name, None) if self._checked_state is state else None
        if name in self._held or instance_locked_by_job(state, name):
            return None
        plan = plan_instance(state=state, instance=name, now=self.ctx.now())
        self.last_plans[name] = plan
        await self._raise_alerts(plan)
        if not plan.steps:
            if plan.converged:
                # computed once a pass: `_unchanged`'s, if read from this same state
                if checked is not None:
                    self._settled[name] = checked
                else:
                    self._settled[name] = plan_inputs(state, name)
            return plan
        bound = log.bind(instance=name)
        bound.info("steps", steps=[s.summary for s in plan.steps], waiting=list(plan.waiting))
        results = await asyncio.gather(*(self._run_step(step) for step in plan.steps))
        touched = {step.node for step in plan.steps}
        await asyncio.gather(*(self.prober.probe(node) for node in touched))
        if all(results):
            self._retry_at.pop(name, None)
            self.mark(name)
        else:
            record = self.ctx.state.last_steps.get(instance_key(name))
            failures = max(record.failures_in_a_row if record else 1, 1)
            delay = min(self.ctx.settings.step_backoff_max_s, 0.5 * 2 ** min(failures, 8))
            self._retry_at[name] = self.ctx.now() + delay
            loop = asyncio.get_running_loop()
            loop.call_later(delay, self.mark, name)
        return plan

    async def _run_step(self, step: Step) -> bool:
        key = instance_key(step.instance)
        started = StepStarted(
            **self.ctx.stamp(),
            key=key,
            step=step.kind.value,
            node=step.node,
            command=step.summary,
            reason=step.note,
        )
        await self.ctx.append([started], wait=False)
        outcome = await self.ctx.nodes.execute(step)
        done: Event
        if outcome.ok:
            done = StepSucceeded(
                **self.ctx.stamp(),
                causation_id=started.id,
                key=key,
                step=step.kind.value,
                node=step.node,
                command=outcome.command,
                duration_s=outcome.duration_s,
            )
        else:
            log.warning("step failed", step=step.summary, error=outcome.error)
            done = StepFailed(
                **self.ctx.stamp(),
                causation_id=started.id,
                key=key,
                step=step.kind.value,
                node=step.node,
                command=outcome.command,
                duration_s=outcome.duration_s,
                error=outcome.error,
            )
        installed: list[Event] = []
        if step.kind == StepKind.INSTALL_OS and step.spec is not None:
            installed = install_events(
                spec=step.spec,
                node=step.node,
                ok=outcome.ok,
                error=outcome.error,
                stamp=lambda: (new_event_id(), self.ctx.now()),
                actor=self.ctx.actor,
            )
        # the install's record is waited for: the plan must not write it twice
        await self.ctx.append([done, *installed], wait=bool(installed))
        return outcome.ok

    async def _raise_alerts(self, plan: InstancePlan) -> None:
        new = [
            AlertRaised(
                **self.ctx.stamp(),
                alert=key,
                severity="critical",
                message=message,
                subject=instance_key(plan.instance),
            )
            for key, message in plan.alerts
            if key not in self.ctx.state.alerts
        ]
        # Alerts the planner raises for one instance end when the plan stops
        # raising them (an ERROR_down instance started again by a person).
        raised = {key for key, _ in plan.alerts}
        subject = instance_key(plan.instance)
        cleared = [
            AlertCleared(
                **self.ctx.stamp(),
                alert=a.alert,
                subject=subject,
                reason="the condition is gone",
            )
            for a in self.ctx.state.alerts.values()
            if a.subject == subject
            and a.alert.startswith(PLANNER_ALERT_PREFIXES)
            and a.alert not in raised
        ]
        if new or cleared:
            await self.ctx.append([*new, *cleared])
