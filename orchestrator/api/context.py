"""What every native-API route shares: the per-application context (state, store,
auth, metrics), the error type the server turns into `{"error": {...}}` bodies, the
principal of the request and the checks of `orchestrator.roles` (403 for what the
role does not allow, 404 for instances a scoped principal does not see), query and
JSON-body parsing that names the bad field, and the JSON views of instances, nodes,
jobs and events (the same shapes as the CLI's `--json`).

Must not append events or talk to nodes (the write routes call
`orchestrator.operations` for that) and must not log tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from events.fields.rules import field_errors
from events.ids import InstanceName, InvalidName, JobId, NodeName, check_name
from events.model import Event
from events.specs import InstanceSpec
from events.state import ClusterState, JobState
from events.store import EventStore
from orchestrator.api.auth import ApiAuth
from orchestrator.api.metrics import ApiMetrics
from orchestrator.cluster_report import instance_row
from orchestrator.event_query import SINCE_HELP, EventFilter, parse_since
from orchestrator.offloop import WorkerPool
from orchestrator.operations import Accepted
from orchestrator.roles import Action, Principal, may, sees_instance

PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("corral_principal", Principal)
LOG_KEY: web.RequestKey[Any] = web.RequestKey("corral_log")


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiContext:
    state: Callable[[], ClusterState]
    store: EventStore
    auth: ApiAuth
    metrics: ApiMetrics
    heartbeat_s: float = 15.0
    fold_wait_s: float = 5.0  # how long a mutation waits for the fold to show it
    public_metrics: bool = False
    # Worker processes for desired-state checks (never on the event loop).
    workers: WorkerPool = field(default_factory=WorkerPool)


CTX: web.AppKey[ApiContext] = web.AppKey("corral_api", ApiContext)


class ApiError(Exception):
    """A request answered with a 4xx (or 503) JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        problems: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.problems = problems

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "error": {"code": self.code, "message": self.message, "field": self.field}
        }
        if self.problems is not None:
            out["problems"] = self.problems
        return out


def ctx_of(request: web.Request) -> ApiContext:
    return request.app[CTX]


def principal_of(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # the auth middleware always sets it
        raise ApiError(401, "unauthenticated", "authentication required")
    return principal


def log_of(request: web.Request) -> Any:
    return request.get(LOG_KEY) or structlog.get_logger("corral.api")


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=str, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


# ---------------------------------------------------------------------- roles


def role_allows(principal: Principal, action: Action) -> bool:
    """What the role allows, before any scope is considered."""
    return may(replace(principal, scope_tags=frozenset()), action)


def forbid(request: web.Request, message: str) -> ApiError:
    principal = request.get(PRINCIPAL_KEY)
    name = principal.name if isinstance(principal, Principal) else ""
    ctx_of(request).metrics.forbidden.labels(principal=name).inc()
    log_of(request).info("api request forbidden", why=message)
    return ApiError(403, "forbidden", message)


def require_role(request: web.Request, action: Action) -> Principal:
    principal = principal_of(request)
    if not role_allows(principal, action):
        raise forbid(request, f"role {principal.role.value} may not {action.value}")
    return principal


def require_unscoped(request: web.Request, what: str) -> Principal:
    principal = principal_of(request)
    if principal.scoped:
        raise forbid(request, f"a principal scoped to tags may not {what}")
    return principal


def visible_instance(state: ClusterState, principal: Principal, name: str) -> bool:
    spec = state.desired.instances.get(InstanceName(name))
    return spec is not None and sees_instance(principal, tags=spec.tags)


def require_instance(state: ClusterState, principal: Principal, name: str) -> InstanceSpec:
    """The instance's spec, or 404 when it does not exist or is not visible."""
    try:
        check_name(name, what="instance name")
    except InvalidName:
        raise ApiError(404, "not_found", f"no instance named {name!r}", field="name") from None
    spec = state.desired.instances.get(InstanceName(name))
    if spec is None or not sees_instance(principal, tags=spec.tags):
        raise ApiError(404, "not_found", f"no instance named {name!r}", field="name")
    return spec


def require_node(state: ClusterState, name: str) -> NodeName:
    try:
        check_name(name, what="node name")
    except InvalidName:
        raise ApiError(404, "not_found", f"no node named {name!r}", field="name") from None
    if NodeName(name) not in state.desired.nodes:
        raise ApiError(404, "not_found", f"no node named {name!r}", field="name")
    return NodeName(name)


def job_instance_tags(state: ClusterState, job: JobState) -> list[frozenset[str]]:
    """Tags of the instances a job targets (one entry per instance target)."""
    out = []
    for target in job.targets:
        kind, _, name = target.partition("/")
        if kind == "instance":
            spec = state.desired.instances.get(InstanceName(name))
            out.append(spec.tags if spec else frozenset())
    return out


def visible_job(state: ClusterState, principal: Principal, job: JobState) -> bool:
    if not principal.scoped:
        return True
    return any(sees_instance(principal, tags=t) for t in job_instance_tags(state, job))


def event_visible(event: Event, state: ClusterState, principal: Principal) -> bool:
    """Unscoped principals see every event; scoped ones only events about their
    instances (including the jobs on them)."""
    if not principal.scoped:
        return True
    spec = getattr(event, "spec", None)
    if isinstance(spec, InstanceSpec) and sees_instance(principal, tags=spec.tags):
        return True
    for key in event.objects():
        kind, _, name = key.partition("/")
        if kind == "instance" and visible_instance(state, principal, name):
            return True
        if kind == "job":
            job = state.jobs.get(JobId(name))
            if job is not None and visible_job(state, principal, job):
                return True
    return False


# ---------------------------------------------------------------------- parsing


def query_int(request: web.Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(422, "invalid", f"{name} must be a whole number", field=name)
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ApiError(422, "invalid", f"{name} must be {minimum}..{maximum}", field=name)
    return value


def query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(422, "invalid", f"{name} must be true or false", field=name)
    return raw in ("true", "1")


def parse_since_query(value: str | None, *, now: float) -> tuple[int, float]:
    """(from_revision, from_time) for the `since` query parameter."""
    try:
        return parse_since(value, now=now)
    except ValueError:
        raise ApiError(422, "invalid", f"since must be {SINCE_HELP}", field="since") from None


def event_filter(request: web.Request, *, since_time: float = 0.0) -> EventFilter:
    """The `type` and `object` query parameters, bounded."""
    types = tuple(t for t in request.query.getall("type", []) if t)
    objects = tuple(o for o in request.query.getall("object", []) if o)
    for what, values in (("type", types), ("object", objects)):
        if len(values) > 50 or any(len(v) > 200 for v in values):
            raise ApiError(422, "invalid", f"too many or too long {what} filters", field=what)
    return EventFilter(types=types, objects=objects, since_time=since_time)


B = TypeVar("B", bound=BaseModel)


async def body_of(request: web.Request, model: type[B]) -> B:
    """The request body as `model` (a `orchestrator.api.bodies` model); an empty body
    is `{}`. Bad JSON -> 400, a field the model refuses -> 422 naming it."""
    raw = await request.read()
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad_json", "the body is not valid JSON", field="body") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid", "the body must be a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        _, path, message = next(iter(field_errors(exc)))
        raise ApiError(422, "invalid", f"{path}: {message}", field=path or "body") from None


async def wait_folded(ctx: ApiContext, revision: int) -> None:
    """Read-your-writes: wait (briefly) until the state shows `revision`."""
    deadline = time.monotonic() + ctx.fold_wait_s
    while True:
        if ctx.state().revision >= revision or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.02)


def accepted_json(accepted: Accepted) -> dict[str, Any]:
    return {
        "job_id": accepted.job_id,
        "revision": accepted.revision,
        "event_ids": list(accepted.event_ids),
    }


# ---------------------------------------------------------------------- views


def visible_names(state: ClusterState, principal: Principal) -> list[InstanceName]:
    return [
        n
        for n in sorted(state.desired.instances)
        if sees_instance(principal, tags=state.desired.instances[n].tags)
    ]


def scoped_status(
    status: dict[str, Any], state: ClusterState, principal: Principal, *, now: float
) -> dict[str, Any]:
    """`status_dict` narrowed to what a scoped principal may see: counts, lists,
    alerts and jobs about its own instances only."""
    if not principal.scoped:
        return status
    rows = [instance_row(state, n, now=now) for n in visible_names(state, principal)]
    out = dict(status)
    out["instances"] = {
        "total": len(rows),
        "by_status": dict(sorted(Counter(r.status for r in rows).items())),
        "degraded": [r.name for r in rows if r.degraded],
        "restart_required": [r.name for r in rows if r.restart_required],
    }
    out["alerts"] = [
        a
        for a in status["alerts"]
        if a["subject"].startswith("instance/")
        and visible_instance(state, principal, a["subject"].partition("/")[2])
    ]
    out["active_jobs"] = [
        j
        for j in status["active_jobs"]
        if (job := state.jobs.get(JobId(j["job_id"]))) is not None
        and visible_job(state, principal, job)
    ]
    return out
