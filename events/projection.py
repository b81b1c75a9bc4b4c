"""The fold: events in, immutable ClusterState out.

Pure: no I/O, no logging. Total: events about unknown objects, removals of absent
things and replays of already-folded revisions never raise; each call copies the
top-level maps once, applies the batch to the copies and returns a new ClusterState.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Generic, TypeVar, overload

from events.ids import InstanceName, JobId, NodeName
from events.model import (
    CLUSTER_KEY,
    AlertCleared,
    AlertRaised,
    DesiredStateApplied,
    Event,
    EventUndecodable,
    GroupSet,
    InstanceDeclared,
    InstanceInstalled,
    InstanceInstallFailed,
    InstancePlaced,
    InstancePowerSet,
    InstanceReinstallRequested,
    InstanceRemoved,
    InstanceRenamed,
    InstanceUpdated,
    JobCancelRequested,
    JobStatus,
    JobSubmitted,
    JobUpdated,
    NodeDeclared,
    NodeFenced,
    NodeFenceFailed,
    NodeFlagsSet,
    NodeHealth,
    NodeHealthChanged,
    NodeObserved,
    NodeRecovered,
    NodeRemoved,
    NodeUpdated,
    PlacementRefused,
    PolicySet,
    StepFailed,
    StepStarted,
    StepSucceeded,
)
from events.specs import DesiredCluster, GroupSpec, InstanceSpec, NodeSpec
from events.state import (
    Alert,
    ClusterState,
    InstallState,
    JobState,
    NodeObservation,
    Placement,
    StepRecord,
)

# Raised whenever folding the same events would give a different ClusterState (a
# new field, a changed rule): checkpoints made by another fold version are not used.
FOLD_VERSION = 2
MAX_JOB_LOG = 500
MAX_VM_STARTS = 10


K = TypeVar("K")
V = TypeVar("V")


class _CopyOnWrite(Generic[K, V]):
    """One of the state's maps for the length of a fold call: reads go to the
    folded state's own dict, and the first write copies it. A fold of one event
    (the reactors' subscription folds them one at a time) then copies only the
    maps that event changes, not every map of a cluster of thousands."""

    __slots__ = ("_map", "_owned")

    def __init__(self, original: dict[K, V]) -> None:
        self._map = original
        self._owned = False

    def _mine(self) -> dict[K, V]:
        if not self._owned:
            self._map = dict(self._map)
            self._owned = True
        return self._map

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: V) -> V: ...
    def get(self, key: K, default: V | None = None) -> V | None:
        return self._map.get(key, default)

    def __getitem__(self, key: K) -> V:
        return self._map[key]

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __setitem__(self, key: K, value: V) -> None:
        self._mine()[key] = value

    def pop(self, key: K, default: V | None = None) -> V | None:
        if key not in self._map:
            return default
        return self._mine().pop(key)

    def result(self) -> dict[K, V]:
        return self._map


class _Builder:
    """Copy-on-write views of the state's maps for the length of one fold call."""

    def __init__(self, state: ClusterState) -> None:
        self.revision = state.revision
        self.revision_ids = set(state.revision_ids)
        self.bumped = set(state.revision_keys)  # object keys versioned at self.revision
        self.count = state.event_count
        self.name = state.desired.name
        self.policy = state.desired.policy
        self.etcd = state.desired.etcd_endpoints
        self.groups = _CopyOnWrite(state.desired.groups)
        self.nodes = _CopyOnWrite(state.desired.nodes)
        self.instances = _CopyOnWrite(state.desired.instances)
        self.placements = _CopyOnWrite(state.placements)
        self.refusals = _CopyOnWrite(state.refusals)
        self.observed = _CopyOnWrite(state.observed)
        self.jobs = _CopyOnWrite(state.jobs)
        self.alerts = _CopyOnWrite(state.alerts)
        self.steps = _CopyOnWrite(state.last_steps)
        self.versions = _CopyOnWrite(state.versions)
        self.last_applied = state.last_applied
        self.vm_starts = _CopyOnWrite(state.vm_starts)
        self.skipped = list(state.skipped)
        self.installs = _CopyOnWrite(state.installs)

    def build(self) -> ClusterState:
        return ClusterState(
            revision=self.revision,
            revision_ids=frozenset(self.revision_ids),
            revision_keys=frozenset(self.bumped),
            event_count=self.count,
            desired=DesiredCluster(
                name=self.name,
                policy=self.policy,
                groups=self.groups.result(),
                nodes=self.nodes.result(),
                instances=self.instances.result(),
                etcd_endpoints=self.etcd,
            ),
            placements=self.placements.result(),
            refusals=self.refusals.result(),
            observed=self.observed.result(),
            jobs=self.jobs.result(),
            alerts=self.alerts.result(),
            last_steps=self.steps.result(),
            versions=self.versions.result(),
            last_applied=self.last_applied,
            vm_starts=self.vm_starts.result(),
            skipped=tuple(self.skipped[-100:]),
            installs=self.installs.result(),
        )

    # ----------------------------------------------------------------- helpers

    def obs(self, node: NodeName) -> NodeObservation:
        return self.observed.get(node) or NodeObservation()

    def set_node(self, spec: NodeSpec) -> None:
        self.nodes[spec.name] = spec
        if spec.group not in self.groups:
            self.groups[spec.group] = GroupSpec(name=spec.group)

    def set_instance(self, spec: InstanceSpec) -> None:
        self.instances[spec.name] = spec

    def job(self, job_id: JobId) -> JobState | None:
        return self.jobs.get(job_id)


def fold(state: ClusterState, events: Iterable[tuple[int, Event]]) -> ClusterState:
    """Apply `events` (revision, event), in order, to `state`.

    Events appended together share one etcd revision. Per-object versions count
    appends, not events (one bump per object per revision), which is exactly what
    the store's version keys count, so an expected version read from the state can
    be checked by etcd."""
    b = _Builder(state)
    for revision, event in events:
        if revision < b.revision or (revision == b.revision and event.id in b.revision_ids):
            continue
        if revision > b.revision:
            b.revision = revision
            b.revision_ids = set()
            b.bumped = set()
        try:
            _apply(b, revision, event)
        except Exception as exc:  # total: a bad event is skipped and named
            b.skipped.append(f"{revision}:{event.TYPE}:{event.id}: {type(exc).__name__}: {exc}")
        b.revision_ids.add(event.id)
        b.count += 1
        for key in event.objects():
            if key not in b.bumped:
                b.bumped.add(key)
                b.versions[key] = b.versions.get(key, 0) + 1
    return b.build()


def _rename(b: _Builder, e: InstanceRenamed) -> None:
    """Spec, placement, restart record and OS install move to the new name."""
    spec = b.instances.pop(e.instance, None)
    if spec is None or e.new_name in b.instances:
        if spec is not None:
            b.instances[e.instance] = spec
        raise ValueError(f"cannot rename {e.instance} to {e.new_name}")
    b.instances[e.new_name] = replace(spec, name=e.new_name)
    placement = b.placements.pop(e.instance, None)
    if placement is not None:
        b.placements[e.new_name] = placement
    starts = b.vm_starts.pop(e.instance, None)
    if starts is not None:
        b.vm_starts[e.new_name] = starts
    install = b.installs.pop(e.instance, None)
    if install is not None:
        b.installs[e.new_name] = install
    b.refusals.pop(e.instance, None)


def _apply(b: _Builder, revision: int, e: Event) -> None:
    if isinstance(e, PolicySet):
        b.name = e.cluster_name or b.name
        b.policy = e.policy
    elif isinstance(e, GroupSet):
        b.groups[e.spec.name] = e.spec
    elif isinstance(e, NodeDeclared | NodeUpdated):
        b.set_node(e.spec)
    elif isinstance(e, NodeRemoved):
        b.nodes.pop(e.node, None)
    elif isinstance(e, NodeFlagsSet):
        spec = b.nodes.get(e.node)
        if spec is not None:
            b.nodes[e.node] = replace(
                spec,
                drained=spec.drained if e.drained is None else e.drained,
                offline=spec.offline if e.offline is None else e.offline,
            )
    elif isinstance(e, InstanceDeclared | InstanceUpdated):
        if isinstance(e, InstanceDeclared) and e.spec.name not in b.instances and e.spec.image:
            # a new instance with an image: its first disk gets the image once
            b.installs[e.spec.name] = InstallState(request_id=e.id, image=e.spec.image.name)
        b.set_instance(e.spec)
        b.refusals.pop(e.spec.name, None)
    elif isinstance(e, InstanceRemoved):
        b.installs.pop(e.instance, None)
        b.vm_starts.pop(e.instance, None)
        b.instances.pop(e.instance, None)
        b.placements.pop(e.instance, None)
        b.refusals.pop(e.instance, None)
    elif isinstance(e, InstanceRenamed):
        _rename(b, e)
    elif isinstance(e, InstancePowerSet):
        b.vm_starts.pop(e.instance, None)  # a person asked: restart budget renewed
        inst = b.instances.get(e.instance)
        if inst is not None:
            b.instances[e.instance] = replace(inst, power=e.power)
    elif isinstance(e, DesiredStateApplied):
        b.last_applied = e
    elif isinstance(e, InstanceReinstallRequested | InstanceInstalled | InstanceInstallFailed):
        _install(b, e)
    elif isinstance(e, InstancePlaced):
        b.placements[e.instance] = Placement(
            primary=e.primary,
            secondary=e.secondary,
            disks=e.disks,
            kind=e.kind,
            revision=revision,
            event_id=e.id,
            superseded=e.superseded,
        )
        b.refusals.pop(e.instance, None)
    elif isinstance(e, PlacementRefused):
        b.refusals[e.instance] = e.reason or ", ".join(f"{r}: {n}" for r, n in e.failures)
    elif isinstance(e, JobSubmitted):
        b.jobs[e.job_id] = JobState(
            job_id=e.job_id,
            kind=e.kind,
            targets=e.targets,
            params=e.params,
            status=JobStatus.QUEUED,
            actor=e.actor,
            reason=e.reason,
            submitted_at=e.time,
            revision=revision,
        )
    elif isinstance(e, JobUpdated):
        job = b.job(e.job_id)
        if job is not None:
            log = job.log
            if e.log:
                log = (*log, (e.time, e.log))[-MAX_JOB_LOG:]
            status = e.status or job.status
            b.jobs[e.job_id] = replace(
                job,
                status=status,
                log=log,
                error=e.error or job.error,
                started_at=job.started_at
                if job.started_at is not None or status != JobStatus.RUNNING
                else e.time,
                ended_at=e.time
                if status in (JobStatus.SUCCESS, JobStatus.ERROR, JobStatus.CANCELED)
                else job.ended_at,
                revision=revision,
            )
    elif isinstance(e, JobCancelRequested):
        job = b.job(e.job_id)
        if job is not None:
            b.jobs[e.job_id] = replace(job, cancel_requested=True, revision=revision)
    elif isinstance(e, StepStarted):
        prev = b.steps.get(e.key)
        b.steps[e.key] = StepRecord(
            step=e.step,
            node=e.node,
            ok=None,
            error="",
            at=e.time,
            failures_in_a_row=prev.failures_in_a_row if prev else 0,
        )
    elif isinstance(e, StepSucceeded):
        b.steps[e.key] = StepRecord(step=e.step, node=e.node, ok=True, error="", at=e.time)
        if e.step == "start-vm" and e.node is not None and e.key.startswith("instance/"):
            name = InstanceName(e.key.partition("/")[2])
            b.vm_starts[name] = (*b.vm_starts.get(name, ()), (e.time, e.node))[-MAX_VM_STARTS:]
    elif isinstance(e, StepFailed):
        prev = b.steps.get(e.key)
        failures = (prev.failures_in_a_row if prev and prev.step == e.step else 0) + 1
        b.steps[e.key] = StepRecord(
            step=e.step, node=e.node, ok=False, error=e.error, at=e.time, failures_in_a_row=failures
        )
    elif isinstance(e, NodeObserved):
        o = b.obs(e.node)
        b.observed[e.node] = replace(
            o,
            facts=e.facts if e.facts is not None else o.facts,
            volumes=e.volumes if e.volumes is not None else o.volumes,
            drbd=e.drbd if e.drbd is not None else o.drbd,
            vms=e.vms if e.vms is not None else o.vms,
            observed_at=e.time,
        )
    elif isinstance(e, NodeHealthChanged):
        o = b.obs(e.node)
        if o.health == NodeHealth.FENCED and e.health != NodeHealth.FENCED:
            # Only NodeRecovered ends a fence: a stray health event must not
            # make a fenced node look usable again.
            return
        b.observed[e.node] = replace(
            o, health=e.health, health_detail=e.detail or e.reason, health_since=e.time
        )
    elif isinstance(e, NodeFenced):
        o = b.obs(e.node)
        b.observed[e.node] = replace(
            o,
            health=NodeHealth.FENCED,
            health_detail=f"fenced ({e.method}{': ' + e.confirmed_by if e.confirmed_by else ''})",
            health_since=e.time,
            fenced_at=e.time,
            fenced_by=e.confirmed_by or e.agent or e.actor,
            fence_event_id=e.id,
            fence_failures=0,
            vms=(),  # a powered-off node runs nothing
        )
    elif isinstance(e, NodeFenceFailed):
        o = b.obs(e.node)
        b.observed[e.node] = replace(o, fence_failures=o.fence_failures + 1)
    elif isinstance(e, NodeRecovered):
        o = b.obs(e.node)
        b.observed[e.node] = replace(
            o,
            health=NodeHealth.ONLINE,
            health_detail=e.reason or "recovered",
            health_since=e.time,
            fenced_at=None,
            fence_event_id="",
        )
    elif isinstance(e, AlertRaised):
        b.alerts[e.alert] = Alert(
            alert=e.alert,
            severity=e.severity,
            message=e.message,
            subject=e.subject,
            raised_at=e.time,
        )
    elif isinstance(e, AlertCleared):
        b.alerts.pop(e.alert, None)
    elif isinstance(e, EventUndecodable):
        subject = e.keys[0] if e.keys else CLUSTER_KEY
        b.alerts[f"undecodable:{e.key}"] = Alert(
            alert=f"undecodable:{e.key}",
            severity="critical",
            message=(
                f"stored event {e.key} ({e.stored_type or 'unknown type'}, revision "
                f"{revision}) was not applied: {e.why}"
            ),
            subject=subject,
            raised_at=e.time,
        )
    # Unknown event types (from a newer corral) are counted and versioned only.


def _install(
    b: _Builder, e: InstanceReinstallRequested | InstanceInstalled | InstanceInstallFailed
) -> None:
    if e.instance not in b.instances:
        return
    if isinstance(e, InstanceReinstallRequested):
        b.installs[e.instance] = InstallState(request_id=e.id, image=e.image, reinstall=True)
        return
    current = b.installs.get(e.instance)
    if current is None or current.done or current.image != e.image:
        return
    if isinstance(e, InstanceInstalled):
        b.installs[e.instance] = replace(current, done=True, error="")
    else:
        b.installs[e.instance] = replace(current, error=e.error)


def fold_all(events: Iterable[tuple[int, Event]]) -> ClusterState:
    return fold(ClusterState(), events)


def instance_names(state: ClusterState) -> list[InstanceName]:
    return sorted(state.desired.instances)
