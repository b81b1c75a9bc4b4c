"""Ganeti RAPI v2 resources, part one: the shared request context (who asks, the
state, errors in Ganeti's shape, submitting jobs) and the cluster, node, group and
job resources. Instance resources are in `orchestrator.rapi.instances`, job resources in
`orchestrator.rapi.job_routes`.

Every mutation goes through `orchestrator.operations` (jobs, node flags) or appends
desired-state events with expected versions, with `rapi:USER` as the actor, and
answers with an integer job id (`orchestrator.rapi.jobs`). Reads fold nothing:
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
from events.model import JobKind
from events.specs import InstanceSpec, NodeSpec
from events.state import ClusterState
from events.store import EventStore, VersionConflict
from orchestrator.operations import OperationRefused, set_node_flags, submit_job
from orchestrator.rapi import views
from orchestrator.rapi.jobs import ChangeRecord, JobIndex
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

    async def recorded_change(self, rec: ChangeRecord) -> web.Response:
        self.jobs.add_change(rec)
        await self.caught_up(rec.revision)
        log.info("rapi change recorded", kind=rec.kind, target=rec.target, actor=rec.actor)
        return reply(rec.revision)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cluster_routes(r: Rapi) -> list[web.RouteDef]:
    async def root(_: web.Request) -> web.Response:
        return reply(None)

    async def version(_: web.Request) -> web.Response:
        return reply(2)

    async def features(_: web.Request) -> web.Response:
        return reply(list(FEATURES))

    async def info(_: web.Request) -> web.Response:
        state = r.state()
        return reply(views.info(state, bc=views.htools_view(state)))

    async def os_list(_: web.Request) -> web.Response:
        state = r.state()
        return reply(sorted({s.os for s in state.desired.instances.values()} | {"none"}))

    async def tags_get(_: web.Request) -> web.Response:
        return reply(views.cluster_tags(views.htools_view(r.state())))

    async def tags_change(request: web.Request) -> web.Response:
        r.require(request, Action.ADMIN)
        raise RapiError(
            501,
            "cluster tags are derived from the cluster policy "
            "(exclusion_tag_prefixes, failure_domain_prefixes); change them in the "
            "desired-state file",
        )

    return [
        web.get("/", root),
        web.get("/2", root),
        web.get("/version", version),
        web.get("/2/features", features),
        web.get("/2/info", info),
        web.get("/2/os", os_list),
        web.get("/2/tags", tags_get),
        web.put("/2/tags", tags_change),
        web.delete("/2/tags", tags_change),
    ]


_ROLE_FLAGS: dict[str, tuple[bool | None, bool | None]] = {
    # role -> (drained, offline)
    "drained": (True, None),
    "offline": (None, True),
    "regular": (False, False),
}


def node_routes(r: Rapi) -> list[web.RouteDef]:
    async def nodes(request: web.Request) -> web.Response:
        state = r.state()
        if not r.flag(request, "bulk"):
            return reply([{"id": n, "uri": f"/2/nodes/{n}"} for n in sorted(state.desired.nodes)])
        return reply([_node(request, state, n) for n in sorted(state.desired.nodes)])

    def _node(request: web.Request, state: ClusterState, name: NodeName) -> dict[str, Any]:
        who = r.principal(request)
        visible = views.listed_instances(state, who) if who.scoped else None
        return views.node(state, name, bc=views.htools_view(state), visible=visible)

    async def one(request: web.Request) -> web.Response:
        state = r.state()
        spec = r.node(request.match_info["node"], state=state)
        return reply(_node(request, state, spec.name))

    async def role_get(request: web.Request) -> web.Response:
        state = r.state()
        spec = r.node(request.match_info["node"], state=state)
        return reply(views.ROLE_WORDS[views.node_role(state, spec.name)])

    async def role_put(request: web.Request) -> web.Response:
        who = r.require(request, Action.NODE_OPERATE)
        r.no_dry_run(request)
        spec = r.node(request.match_info["node"])
        role = await r.body(request)
        if not isinstance(role, str):
            raise RapiError(400, "the body must be a JSON string: drained, offline or regular")
        if role not in _ROLE_FLAGS:
            raise RapiError(
                400,
                f"Can't set {role!r} role: corral nodes are drained, offline or regular "
                "(there are no master candidates)",
            )
        drained, offline = _ROLE_FLAGS[role]
        try:
            accepted = await set_node_flags(
                r.store,
                r.state(),
                node=spec.name,
                drained=drained,
                offline=offline,
                actor=who.name,
                reason=r.reason(request, f"role {role} set through RAPI"),
            )
        except OperationRefused as exc:
            raise refused_error(exc) from None
        return await r.recorded_change(
            ChangeRecord(
                revision=accepted.revision,
                kind="node.role",
                target=spec.name,
                actor=who.name,
                time=r.clock(),
                detail=f"role {role}",
            )
        )

    async def evacuate(request: web.Request) -> web.Response:
        who = r.require(request, Action.NODE_OPERATE)
        r.no_dry_run(request)
        state = r.state()
        spec = r.node(request.match_info["node"], state=state)
        body = await r.body_dict(request)
        if body.get("remote_node"):
            raise RapiError(400, "remote_node is not supported: corral's allocator picks")
        mode = body.get("mode") or "all"
        primaries = any(p.primary == spec.name for p in state.placements.values())
        if mode == "all":
            kind = JobKind.NODE_EVACUATE
        elif mode == "primary-only":
            kind = JobKind.NODE_MIGRATE
        elif mode == "secondary-only" and not primaries:
            kind = JobKind.NODE_EVACUATE  # with no primaries, that is all it moves
        elif mode == "secondary-only":
            raise RapiError(
                400,
                f"{spec.name} still holds primaries; corral evacuates secondaries together "
                "with primaries (mode all) or after them",
            )
        else:
            raise RapiError(400, f"unknown evacuation mode {mode!r}")
        return await r.submit(
            request, kind=kind, target=spec.name, who=who, reason=f"evacuate ({mode}) via RAPI"
        )

    async def migrate(request: web.Request) -> web.Response:
        who = r.require(request, Action.NODE_OPERATE)
        r.no_dry_run(request)
        spec = r.node(request.match_info["node"])
        body = await r.body_dict(request)
        if body.get("target_node"):
            raise RapiError(
                400, "target_node is not supported: DRBD instances move to their secondary"
            )
        return await r.submit(
            request,
            kind=JobKind.NODE_MIGRATE,
            target=spec.name,
            who=who,
            reason="node migrate via RAPI",
        )

    async def tags(request: web.Request) -> web.Response:
        return reply(sorted(r.node(request.match_info["node"]).tags))

    async def groups(request: web.Request) -> web.Response:
        state = r.state()
        rows = views.groups(state, bc=views.htools_view(state))
        if r.flag(request, "bulk"):
            return reply(rows)
        return reply([{"name": g["name"], "uri": f"/2/groups/{g['name']}"} for g in rows])

    async def group(request: web.Request) -> web.Response:
        state = r.state()
        for g in views.groups(state, bc=views.htools_view(state)):
            if g["name"] == request.match_info["group"]:
                return reply(g)
        raise RapiError(404, f"group {request.match_info['group']!r} not found")

    return [
        web.get("/2/nodes", nodes),
        web.get("/2/nodes/{node}", one),
        web.get("/2/nodes/{node}/role", role_get),
        web.put("/2/nodes/{node}/role", role_put),
        web.post("/2/nodes/{node}/evacuate", evacuate),
        web.post("/2/nodes/{node}/migrate", migrate),
        web.get("/2/nodes/{node}/tags", tags),
        web.get("/2/groups", groups),
        web.get("/2/groups/{group}", group),
    ]


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
