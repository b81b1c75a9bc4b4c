"""What every Ganeti RAPI v2 route shares: the request context (who asks, the state,
the job index, reading bodies and flags), errors in Ganeti's shape, and submitting a
job or recording a change with its integer job id.

Every mutation goes through `orchestrator.operations` (jobs, node flags) or appends
desired-state events with expected versions, with `rapi:USER` as the actor, and
answers with an integer job id (`orchestrator.rapi.job_index`). Reads fold nothing:
they render the orchestrator's current ClusterState (`orchestrator.rapi.views`).

Must not run node commands, wait for convergence (clients poll the job), or log
request bodies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from events.ids import InstanceName, InvalidName, NodeName
from events.model import Event, JobKind
from events.specs import InstanceSpec, NodeSpec
from events.state import ClusterState
from events.store import EventStore, VersionConflict
from orchestrator.operations import Accepted, OperationRefused, submit_job
from orchestrator.rapi.job_index import ChangeRecord, JobIndex
from orchestrator.roles import Action, Principal, Role, may, sees_instance

log = structlog.get_logger("corral.rapi")

FEATURES = (
    "instance-create-reqv1",
    "instance-reinstall-reqv1",
    "node-migrate-reqv1",
    "node-evac-res1",
)
WAIT_TIMEOUT_S = 10.0  # Ganeti's _WFJC_TIMEOUT
PRINCIPAL_KEY = web.RequestKey("corral.principal", Principal)
ANONYMOUS = Principal(name="rapi:anonymous", role=Role.VIEWER)

_EXPLAIN = {
    400: "Bad request syntax or unsupported method",
    401: "No permission -- see authorization schemes",
    403: "Request forbidden -- authorization will not help",
    404: "Nothing matches the given URI",
    405: "Specified method is invalid for this resource",
    409: "Request conflict",
    500: "Server got itself in trouble",
    501: "Server does not support this operation",
    502: "Invalid responses from another server/proxy",
    503: "The server cannot process the request due to a high load",
}
_MESSAGES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class RapiError(Exception):
    """An HTTP error answered with Ganeti's body: {"code", "message", "explain"}."""

    def __init__(self, code: int, explain: str = "", *, message: str = "") -> None:
        super().__init__(explain or message)
        self.code = code
        self.message = message or _MESSAGES.get(code, "Error")
        self.explain = explain or _EXPLAIN.get(code, "")

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "explain": self.explain}


def refused_error(exc: OperationRefused) -> RapiError:
    text = str(exc)
    if exc.field in ("instance", "node", "job_id") and text.startswith("no "):
        return RapiError(404, text)
    if exc.field == "target":
        return RapiError(409, text)
    return RapiError(400, text)


def reply(value: Any) -> web.Response:
    return web.Response(text=json.dumps(value), content_type="application/json")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rapi:
    """What every resource needs: the state, the store, the job index, the clock."""

    state: Callable[[], ClusterState]
    store: EventStore
    jobs: JobIndex
    clock: Callable[[], float] = time.time
    fold_timeout_s: float = 10.0

    # ------------------------------------------------------------------ requests

    @staticmethod
    def principal(request: web.Request) -> Principal:
        got: Principal = request.get(PRINCIPAL_KEY, ANONYMOUS)
        return got

    def require(
        self, request: web.Request, action: Action, *, instance_tags: frozenset[str] | None = None
    ) -> Principal:
        who = self.principal(request)
        if may(who, action, instance_tags=instance_tags):
            return who
        if who is ANONYMOUS:
            raise RapiError(401, "this request needs a user (HTTP Basic authentication)")
        raise RapiError(403, f"{who.name} ({who.role}) may not {action.value} here")

    @staticmethod
    async def body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise RapiError(400, f"the request body is not JSON: {exc}") from None

    async def body_dict(self, request: web.Request) -> dict[str, Any]:
        got = await self.body(request)
        if got is None:
            return {}
        if not isinstance(got, dict):
            raise RapiError(400, "the request body must be a JSON object")
        return got

    @staticmethod
    def flag(request: web.Request, name: str) -> bool:
        value = request.query.get(name, "0").strip().lower()
        return value not in ("", "0", "false", "no")

    @staticmethod
    def reason(request: web.Request, default: str) -> str:
        return request.query.get("reason", "") or default

    def no_dry_run(self, request: web.Request) -> None:
        if self.flag(request, "dry-run"):
            raise RapiError(501, "dry-run is not supported; `corral plan` previews changes")

    # ------------------------------------------------------------------ objects

    def instance(
        self, request: web.Request, name: str, *, state: ClusterState | None = None
    ) -> InstanceSpec:
        """The instance `name` as the asker may see it, else 404 (a scoped user is
        not told that other users' instances exist)."""
        st = state or self.state()
        spec = st.desired.instances.get(InstanceName(name))
        placed = st.placements.get(InstanceName(name))
        if (
            spec is None
            or placed is None
            or not sees_instance(self.principal(request), tags=spec.tags)
        ):
            raise RapiError(404, f"instance {name!r} not found")
        return spec

    def node(self, name: str, *, state: ClusterState | None = None) -> NodeSpec:
        spec = (state or self.state()).desired.nodes.get(NodeName(name))
        if spec is None:
            raise RapiError(404, f"node {name!r} not found")
        return spec

    # ------------------------------------------------------------------ writing

    async def caught_up(self, revision: int) -> None:
        """Wait until the orchestrator's fold has `revision` (read-your-writes)."""
        deadline = time.monotonic() + self.fold_timeout_s
        while self.state().revision < revision:
            if time.monotonic() > deadline:
                raise RapiError(503, f"the orchestrator has not folded revision {revision} yet")
            await asyncio.sleep(0.02)

    async def submit(
        self,
        request: web.Request,
        *,
        kind: JobKind,
        target: str,
        who: Principal,
        params: Mapping[str, str] | None = None,
        reason: str,
    ) -> web.Response:
        try:
            accepted = await submit_job(
                self.store,
                self.state(),
                kind=kind,
                target=target,
                params=params,
                actor=who.name,
                reason=self.reason(request, reason),
            )
        except OperationRefused as exc:
            raise refused_error(exc) from None
        return await self.submitted(accepted, kind=kind, target=target, who=who)

    async def submitted(
        self, accepted: Accepted, *, kind: JobKind, target: str, who: Principal
    ) -> web.Response:
        """A job recorded (by `submit` or another operation): Ganeti's job id."""
        assert accepted.job_id is not None
        self.jobs.add_job(accepted.job_id, accepted.revision)
        await self.caught_up(accepted.revision)
        log.info(
            "rapi job submitted",
            job=accepted.job_id,
            ganeti_job=accepted.revision,
            kind=kind.value,
            target=target,
            actor=who.name,
        )
        return reply(accepted.revision)

    async def append_change(
        self,
        event: Event,
        *,
        state: ClusterState,
        who: Principal,
        kind: str,
        detail: str,
    ) -> web.Response:
        """Append a desired-state change of one instance with the version the asker
        saw (a concurrent change makes it a 409), and answer with its job id."""
        key = event.objects()[0]  # instance/NAME
        revision = await self.store.append([event], expected={key: state.versions.get(key, 0)})
        return await self.recorded_change(
            ChangeRecord(
                revision=revision,
                kind=kind,
                target=key.partition("/")[2],
                actor=who.name,
                time=self.clock(),
                detail=detail,
            )
        )

    async def recorded_change(self, rec: ChangeRecord) -> web.Response:
        self.jobs.add_change(rec)
        await self.caught_up(rec.revision)
        log.info("rapi change recorded", kind=rec.kind, target=rec.target, actor=rec.actor)
        return reply(rec.revision)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_for(exc: Exception) -> RapiError | None:
    """Known exceptions as Ganeti errors; None for a bug (answered 500)."""
    if isinstance(exc, RapiError):
        return exc
    if isinstance(exc, OperationRefused):
        return refused_error(exc)
    if isinstance(exc, InvalidName):
        return RapiError(400, str(exc))
    if isinstance(exc, VersionConflict):
        return RapiError(
            409, f"{exc.key} changed while the request was made (version {exc.actual}); retry"
        )
    return None
