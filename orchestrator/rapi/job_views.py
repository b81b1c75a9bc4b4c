"""Ganeti's face of corral's jobs for RAPI v2 (`/2/jobs`, `/2/jobs/ID`,
`/2/jobs/ID/wait`): each corral job kind as the Ganeti opcode it stands for, and a
job's fields (status, ops, summary, oplog, timestamps) in Ganeti's shapes, so that
Ganeti's RAPI client follows a corral job as a Ganeti one.

Pure: no I/O, no logging, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from events.ids import InstanceName
from events.state import ClusterState, JobState


def ts(value: float | None) -> list[int] | None:
    """Ganeti's timestamps: [seconds, microseconds]."""
    if value is None:
        return None
    sec = int(value)
    return [sec, round((value - sec) * 1_000_000)]


# corral job kind -> (Ganeti opcode, the opcode's target field, summary word)
OPCODES: Mapping[str, tuple[str, str]] = {
    "instance.start": ("OP_INSTANCE_STARTUP", "instance_name"),
    "instance.stop": ("OP_INSTANCE_SHUTDOWN", "instance_name"),
    "instance.reboot": ("OP_INSTANCE_REBOOT", "instance_name"),
    "instance.migrate": ("OP_INSTANCE_MIGRATE", "instance_name"),
    "instance.failover": ("OP_INSTANCE_FAILOVER", "instance_name"),
    "instance.replace-disks": ("OP_INSTANCE_REPLACE_DISKS", "instance_name"),
    "instance.grow-disk": ("OP_INSTANCE_GROW_DISK", "instance_name"),
    "instance.activate-disks": ("OP_INSTANCE_ACTIVATE_DISKS", "instance_name"),
    "instance.deactivate-disks": ("OP_INSTANCE_DEACTIVATE_DISKS", "instance_name"),
    "instance.create": ("OP_INSTANCE_CREATE", "instance_name"),
    "instance.remove": ("OP_INSTANCE_REMOVE", "instance_name"),
    "instance.modify": ("OP_INSTANCE_SET_PARAMS", "instance_name"),
    "instance.rename": ("OP_INSTANCE_RENAME", "instance_name"),
    "instance.hotplug": ("OP_INSTANCE_SET_PARAMS", "instance_name"),
    "instance.remove-disk": ("OP_INSTANCE_SET_PARAMS", "instance_name"),
    "instance.reinstall": ("OP_INSTANCE_REINSTALL", "instance_name"),
    "instance.tags": ("OP_TAGS_SET", "name"),
    "instance.query": ("OP_INSTANCE_QUERY_DATA", "instance_name"),
    "node.evacuate": ("OP_NODE_EVACUATE", "node_name"),
    "node.migrate": ("OP_NODE_MIGRATE", "node_name"),
    "node.failover": ("OP_NODE_EVACUATE", "node_name"),
    "node.role": ("OP_NODE_SET_PARAMS", "node_name"),
    "cluster.balance": ("OP_TEST_DUMMY", "name"),
}

# A start job recorded for an instance created through RAPI carries this param, so
# its Ganeti face is the creation opcode.
GANETI_OP_PARAM = "ganeti_op"


@dataclass(frozen=True, slots=True, kw_only=True)
class GanetiJob:
    """One Ganeti job as RAPI shows it: a corral job, or a desired-state change made
    through RAPI (tags, node role, removal) or a query answered at once."""

    id: int
    kind: str  # a key of OPCODES
    target: str  # instance or node name
    params: tuple[tuple[str, str], ...]
    status: str  # queued, waiting, running, success, error, canceling, canceled
    actor: str
    received_at: float
    started_at: float | None
    ended_at: float | None
    log: tuple[tuple[float, str], ...] = ()
    error: str = ""
    result: Any = None

    @property
    def opcode(self) -> str:
        op = dict(self.params).get(GANETI_OP_PARAM)
        return op or OPCODES.get(self.kind, ("OP_TEST_DUMMY", "name"))[0]

    @property
    def final(self) -> bool:
        return self.status in ("success", "error", "canceled")


def from_corral_job(job_id: int, job: JobState, state: ClusterState) -> GanetiJob:
    target = job.targets[0].partition("/")[2] if job.targets else ""
    result: Any = None
    if job.status == "success":
        op = dict(job.params).get(GANETI_OP_PARAM)
        placement = state.placements.get(InstanceName(target))
        if op == "OP_INSTANCE_CREATE" and placement is not None:
            result = [placement.primary, placement.secondary]
        elif job.kind in ("node.evacuate", "node.failover"):
            result = {"jobs": []}
    return GanetiJob(
        id=job_id,
        kind=job.kind,
        target=target,
        params=job.params,
        status=str(job.status),
        actor=job.actor,
        received_at=job.submitted_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        log=job.log,
        error=job.error,
        result=result,
    )


def _op(job: GanetiJob) -> dict[str, Any]:
    field = OPCODES.get(job.kind, ("", "name"))[1]
    op: dict[str, Any] = {"OP_ID": job.opcode, field: job.target}
    op.update({k: v for k, v in job.params if k != GANETI_OP_PARAM})
    op["reason"] = [[job.actor, "corral", int(job.received_at * 1e9)]]
    return op


def summary(job: GanetiJob) -> str:
    return f"{job.opcode.removeprefix('OP_')}({job.target})"


def oplog(job: GanetiJob) -> list[list[Any]]:
    """Ganeti log entries: (serial, timestamp, type, message); serials from 1."""
    return [[i, ts(t), "message", line] for i, (t, line) in enumerate(job.log, start=1)]


def _opresult(job: GanetiJob) -> list[Any]:
    if job.status == "error":
        return [["OpExecError", [job.error or "failed"]]]
    return [job.result]


# Ganeti's job fields, each read off a GanetiJob.
_JOB_FIELDS: dict[str, Callable[[GanetiJob], Any]] = {
    "id": lambda j: j.id,
    "status": lambda j: j.status,
    "ops": lambda j: [_op(j)],
    "summary": lambda j: [summary(j)],
    "opstatus": lambda j: [j.status],
    "opresult": _opresult,
    "oplog": lambda j: [oplog(j)],
    "received_ts": lambda j: ts(j.received_at),
    "start_ts": lambda j: ts(j.started_at),
    "end_ts": lambda j: ts(j.ended_at),
    "priority": lambda j: 0,
    "oppriority": lambda j: [0],
    "opstart": lambda j: [ts(j.started_at)],
    "opexec": lambda j: [ts(j.started_at)],
    "opend": lambda j: [ts(j.ended_at)],
}


def job_field(job: GanetiJob, name: str) -> Any:
    """One of Ganeti's job fields; KeyError for a field Ganeti does not have."""
    return _JOB_FIELDS[name](job)


J_FIELDS_BULK = ("id", "ops", "status", "summary", "opstatus", "received_ts", "start_ts", "end_ts")
J_FIELDS = (*J_FIELDS_BULK, "oplog", "opresult")
JOB_FIELDS_KNOWN = frozenset((*J_FIELDS, "priority", "oppriority", "opstart", "opexec", "opend"))


def job(job: GanetiJob, fields: Sequence[str] = J_FIELDS) -> dict[str, Any]:
    return {f: job_field(job, f) for f in fields}
