"""The mutations users can ask for, shared by the CLI, the native API and the RAPI:
each one validates its arguments against the current ClusterState, turns them into
events and appends them, returning only after etcd has them (nothing acknowledged
is lost). Operations that take time are jobs: the caller gets the job id and the
revision that recorded the request; reactors do the work.

Must not run node commands or wait for convergence itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from events.ids import EventId, InstanceName, JobId, NodeName, check_name, new_event_id
from events.model import (
    Event,
    InstancePowerSet,
    JobCancelRequested,
    JobKind,
    JobSubmitted,
    NodeFenced,
    NodeFlagsSet,
    instance_key,
    job_key,
    node_key,
)
from events.specs import PowerState
from events.state import ClusterState


class EventAppender(Protocol):
    async def append(
        self, events: Sequence[Event], *, expected: Mapping[str, int] | None = None
    ) -> int: ...


class OperationRefused(ValueError):
    """A request that cannot be accepted as given; `field` names the bad argument."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    revision: int
    job_id: JobId | None = None
    event_ids: tuple[EventId, ...] = ()


def new_job_id() -> JobId:
    # Sortable by submission time, unique without coordination.
    return JobId(f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:6]}")


_INSTANCE_JOBS = {
    JobKind.INSTANCE_START,
    JobKind.INSTANCE_STOP,
    JobKind.INSTANCE_REBOOT,
    JobKind.INSTANCE_MIGRATE,
    JobKind.INSTANCE_FAILOVER,
    JobKind.INSTANCE_REPLACE_DISKS,
    JobKind.INSTANCE_GROW_DISK,
    JobKind.INSTANCE_ACTIVATE_DISKS,
    JobKind.INSTANCE_DEACTIVATE_DISKS,
    JobKind.INSTANCE_REMOVE,
    JobKind.INSTANCE_MODIFY,
    JobKind.INSTANCE_RENAME,
    JobKind.INSTANCE_REINSTALL,
    JobKind.INSTANCE_HOTPLUG,
    JobKind.INSTANCE_REMOVE_DISK,
}
_NODE_JOBS = {JobKind.NODE_EVACUATE, JobKind.NODE_MIGRATE, JobKind.NODE_FAILOVER}

# The verbs users type (`corral instance ACTION`, `POST /api/v1/instances/N/ACTION`,
# and the same for nodes) and what each one submits or sets.
INSTANCE_VERBS: Mapping[str, JobKind] = {
    "start": JobKind.INSTANCE_START,
    "stop": JobKind.INSTANCE_STOP,
    "reboot": JobKind.INSTANCE_REBOOT,
    "migrate": JobKind.INSTANCE_MIGRATE,
    "failover": JobKind.INSTANCE_FAILOVER,
    "replace-disks": JobKind.INSTANCE_REPLACE_DISKS,
    "grow-disk": JobKind.INSTANCE_GROW_DISK,
    "activate-disks": JobKind.INSTANCE_ACTIVATE_DISKS,
}
NODE_JOB_VERBS: Mapping[str, JobKind] = {
    "evacuate": JobKind.NODE_EVACUATE,
    "migrate": JobKind.NODE_MIGRATE,
    "failover": JobKind.NODE_FAILOVER,
}
NODE_FLAG_VERBS: Mapping[str, Mapping[str, bool]] = {
    "drain": {"drained": True},
    "undrain": {"drained": False},
    "offline": {"offline": True},
    "online": {"offline": False},
}


def _require_instance(state: ClusterState, name: str) -> InstanceName:
    check_name(name, what="instance name")
    if InstanceName(name) not in state.desired.instances:
        raise OperationRefused(f"no instance named {name!r}", field="instance")
    return InstanceName(name)


def _require_node(state: ClusterState, name: str) -> NodeName:
    check_name(name, what="node name")
    if NodeName(name) not in state.desired.nodes:
        raise OperationRefused(f"no node named {name!r}", field="node")
    return NodeName(name)


def _busy_job(state: ClusterState, keys: Sequence[str]) -> str | None:
    for job in state.jobs.values():
        if job.status in ("queued", "running", "canceling") and set(job.targets) & set(keys):
            return job.job_id
    return None


async def submit_job(
    store: EventAppender,
    state: ClusterState,
    *,
    kind: JobKind,
    target: str,
    params: Mapping[str, str] | None = None,
    actor: str,
    reason: str = "",
    follow: Sequence[Event] = (),
) -> Accepted:
    """Record a job request. One job per instance (or node) at a time: a second one
    is refused while the first is queued or running. `follow` are decisions the
    job carries (a changed spec), appended with it in one transaction, caused by it,
    expecting their objects at the versions in `state` (what they were decided on)."""
    if kind in _INSTANCE_JOBS:
        key = instance_key(_require_instance(state, target))
    elif kind in _NODE_JOBS:
        key = node_key(_require_node(state, target))
    else:
        raise OperationRefused(f"{kind} is not submitted through submit_job", field="kind")
    busy = _busy_job(state, [key])
    if busy:
        raise OperationRefused(f"{key} already has job {busy} in progress", field="target")
    job_id = new_job_id()
    events: list[Event] = [
        JobSubmitted(
            id=new_event_id(),
            time=time.time(),
            actor=actor,
            reason=reason,
            correlation_id=job_id,
            job_id=job_id,
            kind=kind.value,
            targets=(key,),
            params=tuple(sorted((params or {}).items())),
        )
    ]
    if kind in (JobKind.INSTANCE_START, JobKind.INSTANCE_STOP):
        power = PowerState.RUNNING if kind is JobKind.INSTANCE_START else PowerState.STOPPED
        events.append(
            InstancePowerSet(
                id=new_event_id(),
                time=time.time(),
                actor=actor,
                reason=reason or f"{kind.value} requested",
                causation_id=events[0].id,
                correlation_id=job_id,
                instance=InstanceName(target),
                power=power,
            )
        )
    events.extend(replace(e, causation_id=events[0].id, correlation_id=job_id) for e in follow)
    expected = {k: state.versions.get(k, 0) for e in follow for k in e.objects()}
    revision = await store.append(events, expected={**expected, job_key(job_id): 0})
    return Accepted(revision=revision, job_id=job_id, event_ids=tuple(e.id for e in events))


async def cancel_job(
    store: EventAppender, state: ClusterState, *, job_id: str, actor: str, reason: str = ""
) -> Accepted:
    job = state.jobs.get(JobId(job_id))
    if job is None:
        raise OperationRefused(f"no job {job_id!r}", field="job_id")
    if job.status != "queued":
        raise OperationRefused(
            f"job {job_id} is {job.status}; only queued jobs can be canceled", field="job_id"
        )
    event = JobCancelRequested(
        id=new_event_id(), time=time.time(), actor=actor, reason=reason, job_id=JobId(job_id)
    )
    revision = await store.append([event])
    return Accepted(revision=revision, job_id=JobId(job_id), event_ids=(event.id,))


async def set_node_flags(
    store: EventAppender,
    state: ClusterState,
    *,
    node: str,
    drained: bool | None = None,
    offline: bool | None = None,
    actor: str,
    reason: str = "",
) -> Accepted:
    name = _require_node(state, node)
    event = NodeFlagsSet(
        id=new_event_id(),
        time=time.time(),
        actor=actor,
        reason=reason,
        node=name,
        drained=drained,
        offline=offline,
    )
    revision = await store.append([event])
    return Accepted(revision=revision, event_ids=(event.id,))


async def confirm_node_off(
    store: EventAppender, state: ClusterState, *, node: str, actor: str, reason: str
) -> Accepted:
    """The manual fencing override (safety rule 4): a person vouches that the node
    is powered off. Recorded with who said so and why; the healer then treats the
    node as fenced."""
    name = _require_node(state, node)
    if not reason.strip():
        raise OperationRefused(
            "confirm-off needs a reason saying how you know the node is off", field="reason"
        )
    event = NodeFenced(
        id=new_event_id(),
        time=time.time(),
        actor=actor,
        reason=reason,
        node=name,
        method="manual",
        confirmed_by=actor,
    )
    revision = await store.append([event])
    return Accepted(revision=revision, event_ids=(event.id,))
