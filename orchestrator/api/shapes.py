"""The native API's answers as types: every JSON document a route gives, written once
as a TypedDict, from which the OpenAPI document's schemas are generated (pydantic)
and against which tests check the views' real output. Extra keys are not allowed, so
a view that grows a field without its shape fails those tests and schemathesis.

Pure: no I/O, no logging. Must not build any document itself (the views do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NotRequired

from pydantic import ConfigDict
from typing_extensions import TypedDict

# Re-exported: the rows are shapes of the document too, declared once with their record.
from orchestrator.cluster_report import InstanceRow as InstanceRow
from orchestrator.cluster_report import NodeRow as NodeRow

_STRICT = ConfigDict(extra="forbid")


class Shape(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]


class ErrorDetail(Shape):
    code: str
    message: str
    field: str | None


class Problem(Shape):
    file: NotRequired[str]
    line: NotRequired[int]
    column: NotRequired[int]
    field: NotRequired[str]
    message: str


class Error(Shape):
    error: ErrorDetail
    problems: NotRequired[list[Problem]]


class Accepted(Shape):
    job_id: str | None
    revision: int
    event_ids: list[str]


class ApplyResult(Accepted):
    changes: int


class DiskInfo(Shape):
    index: int
    size_mib: int
    drbd_minor: int
    drbd_port: int


class NicInfo(Shape):
    mac: str | None
    link: str
    mode: str
    ip: str | None


class LastStep(Shape):
    step: str
    node: str | None
    ok: bool | None
    error: str
    at: float
    failures_in_a_row: int


# `corral instance info --json`: the row and more. A dataclass because the row is
# one (`orchestrator.cluster_report`, the one declaration of its fields).
@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceInfo(InstanceRow):
    os: str
    power: Literal["running", "stopped"]
    disks: list[DiskInfo]
    nics: list[NicInfo]
    placed_by: str | None
    refusal: str | None
    last_step: LastStep | None
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo(NodeRow):
    address: str
    port: int
    replication_address: str
    group: str
    tags: list[str]
    fence_agent: str | None
    fenced_by: str
    health_detail: str
    boot_id: str | None
    instances_primary: list[str]
    instances_secondary: list[str]


JobStatus = Literal["queued", "running", "success", "error", "canceling", "canceled"]


class Job(Shape):
    job_id: str
    kind: str
    targets: list[str]
    params: dict[str, str]
    status: JobStatus
    actor: str
    reason: str
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    error: str


class JobLogLine(Shape):
    time: float
    line: str


class JobInfo(Job):
    log: list[JobLogLine]


class Event(TypedDict):
    """One event; the fields of its type follow the envelope."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    revision: int
    type: str
    objects: list[str]
    id: str
    time: float
    actor: str
    reason: str
    causation_id: str | None
    correlation_id: str | None


class NodeCounts(Shape):
    total: int
    by_health: dict[str, list[str]]


class InstanceCounts(Shape):
    total: int
    by_status: dict[str, int]
    degraded: list[str]
    restart_required: list[str]


class NPlusOne(Shape):
    policy: bool
    failing_nodes: list[str]


class AlertRow(Shape):
    alert: str
    severity: str
    subject: str
    message: str


class ActiveJob(Shape):
    job_id: str
    kind: str
    targets: list[str]
    status: str


class LastApply(Shape):
    digest: str
    author: str
    message: str
    files: list[str]
    time: float


class Status(Shape):
    cluster: str
    revision: int
    events: int
    nodes: NodeCounts
    instances: InstanceCounts
    n_plus_one: NPlusOne
    alerts: list[AlertRow]
    active_jobs: list[ActiveJob]
    last_apply: LastApply | None
    node_table: list[NodeRow]


class Finding(Shape):
    severity: Literal["error", "warning"]
    check: str
    subject: str
    message: str


class Verify(Shape):
    findings: list[Finding]
    errors: int


class Desired(Shape):
    cluster: str
    policy: dict[str, object]
    groups: list[dict[str, object]]
    nodes: list[dict[str, object]]
    instances: list[dict[str, object]]
    revision: int


class FieldChange(Shape):
    field: str
    old: str
    new: str


class PlacementPreview(Shape):
    primary: str | None
    secondary: str | None
    refusal: str | None


class Change(Shape):
    action: Literal["create", "modify", "remove", "start", "stop"]
    kind: Literal["cluster", "group", "node", "instance"]
    name: str
    fields: list[FieldChange]
    notes: list[str]
    placement: NotRequired[PlacementPreview]


class Plan(Shape):
    changes: list[Change]
    problems: list[str]
    drift: bool
    has_changes: bool
