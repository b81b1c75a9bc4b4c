"""The events that record a desired-state diff (`orchestrator.desired.diff.Diff`):
led by one DesiredStateApplied (their cause and correlation), in an order the fold
accepts, with a hotplug job for NICs and disks added to placed instances and a
remove-disk job for a last disk dropped from one; and the
object versions an apply expects, so a command that raced the plan fails the apply.

Pure: no I/O, no logging, no clock (time and ids are passed in). Must not decide
what changes: the diff does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from events.ids import EventId, GroupName, InstanceName, NodeName
from events.model import (
    DesiredStateApplied,
    Event,
    GroupSet,
    InstanceDeclared,
    InstanceRemoved,
    InstanceUpdated,
    JobKind,
    JobSubmitted,
    NodeDeclared,
    NodeRemoved,
    NodeUpdated,
    PolicySet,
    instance_key,
    node_key,
)
from events.specs import DesiredCluster
from events.state import ClusterState
from orchestrator.desired.diff import Action, Change, Diff
from orchestrator.operations import new_job_id


def diff_events(
    *,
    diff: Diff,
    wanted: DesiredCluster,
    digest: str,
    files: tuple[str, ...],
    author: str,
    message: str,
    now: float,
    new_id: Callable[[], EventId],
) -> list[Event]:
    """The events that record `diff`, led by DesiredStateApplied (their cause and
    correlation), in an order the fold accepts (policy, nodes, instances, removals)."""
    wanted = diff.wanted or wanted
    applied = DesiredStateApplied(
        id=new_id(),
        time=now,
        actor=author,
        reason=message or f"applied {', '.join(files)}",
        digest=digest,
        author=author,
        message=message,
        files=files,
        changes=len(diff.changes),
        images=tuple(wanted.images[n] for n in sorted(wanted.images)),
    )
    out: list[Event] = [applied]
    for ch in diff.changes:
        why = f"{ch.action} {ch.kind} {ch.name} from {', '.join(files)}"
        if ch.forced:
            why += f"; forced past: {'; '.join(ch.forced)}"
        if ch.kind == "cluster":
            out.append(
                PolicySet(
                    id=new_id(),
                    reason=why,
                    cluster_name=wanted.name,
                    policy=wanted.policy,
                    time=now,
                    actor=author,
                )
            )
        elif ch.kind == "group":
            out.append(
                GroupSet(
                    id=new_id(),
                    reason=why,
                    spec=wanted.groups[GroupName(ch.name)],
                    time=now,
                    actor=author,
                )
            )
        elif ch.kind == "node" and ch.action is Action.REMOVE:
            out.append(
                NodeRemoved(id=new_id(), reason=why, node=NodeName(ch.name), time=now, actor=author)
            )
        elif ch.kind == "node":
            cls = NodeDeclared if ch.action is Action.CREATE else NodeUpdated
            out.append(
                cls(
                    id=new_id(),
                    reason=why,
                    spec=wanted.nodes[NodeName(ch.name)],
                    time=now,
                    actor=author,
                )
            )
        elif ch.action is Action.REMOVE:
            out.append(
                InstanceRemoved(
                    id=new_id(), reason=why, instance=InstanceName(ch.name), time=now, actor=author
                )
            )
        else:
            spec = wanted.instances[InstanceName(ch.name)]
            icls = InstanceDeclared if ch.action is Action.CREATE else InstanceUpdated
            out.append(icls(id=new_id(), reason=why, spec=spec, time=now, actor=author))
            if ch.hotplug_nics or ch.added_disks:
                out.append(_hotplug_job(ch, why=why, now=now, author=author, new_id=new_id))
            if ch.removed_disk is not None:
                out.append(
                    _job(
                        ch,
                        kind=JobKind.INSTANCE_REMOVE_DISK,
                        params=(("disk", str(ch.removed_disk)),),
                        why=why,
                        now=now,
                        author=author,
                        new_id=new_id,
                    )
                )
    # Node removals last, after the instances that referenced them are gone.
    out.sort(key=lambda e: 1 if isinstance(e, NodeRemoved) else 0)
    correlation = f"apply:{digest[:12]}"
    return [applied] + [
        replace(e, causation_id=applied.id, correlation_id=correlation) for e in out[1:]
    ]


def _hotplug_job(
    ch: Change, *, why: str, now: float, author: str, new_id: Callable[[], EventId]
) -> JobSubmitted:
    return _job(
        ch,
        kind=JobKind.INSTANCE_HOTPLUG,
        params=(
            ("disks", ",".join(str(i) for i in ch.added_disks)),
            ("nics", ",".join(str(i) for i in ch.hotplug_nics)),
        ),
        why=why,
        now=now,
        author=author,
        new_id=new_id,
    )


def _job(
    ch: Change,
    *,
    kind: JobKind,
    params: tuple[tuple[str, str], ...],
    why: str,
    now: float,
    author: str,
    new_id: Callable[[], EventId],
) -> JobSubmitted:
    return JobSubmitted(
        id=new_id(),
        time=now,
        actor=author,
        reason=why,
        job_id=new_job_id(),
        kind=kind.value,
        targets=(instance_key(ch.name),),
        params=params,
    )


def expected_versions(*, diff: Diff, state: ClusterState) -> dict[str, int]:
    """Optimistic concurrency for an apply: every object it touches must be at the
    version the diff was computed from, so a command that raced the plan fails the
    apply instead of being silently overwritten."""
    keys: set[str] = set()
    for ch in diff.changes:
        if ch.kind == "cluster":
            keys.add("cluster")
        elif ch.kind == "group":
            keys.add(f"group/{ch.name}")
        elif ch.kind == "node":
            keys.add(node_key(ch.name))
        elif ch.kind == "instance":
            keys.add(instance_key(ch.name))
    return {k: state.versions.get(k, 0) for k in sorted(keys)}
