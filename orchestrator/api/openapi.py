"""The OpenAPI 3.1 document of the native API, served (without authentication) at
`/api/v1/openapi.json`: every route with its parameters, its request body (the models
of `orchestrator.api.bodies`) and the schemas of every answer it can give (the shapes
of `orchestrator.api.shapes`), generated from those types by pydantic, so the
document cannot drift from what the routes parse. schemathesis checks the running
API against it (`tests/lab/faces/test_api_schema.py`).

Pure data, built once: must not read state or do I/O. A route added to the server
is added to `_ROUTES` in the same commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter

from orchestrator.api import bodies, shapes
from orchestrator.api.context import json_response

OPENAPI_PATH = "/api/v1/openapi.json"
JSON = "application/json"
Schema = dict[str, Any]
_REF = "#/components/schemas/{model}"

_ERROR_CODES = {
    "400": "The body is not JSON.",
    "401": "No valid API token.",
    "403": "The token's role or scope does not allow this.",
    "404": "No such object (or not visible to a scoped token).",
    "409": "Conflicts with a job in progress or a concurrent change.",
    "413": "The body is larger than 1 MiB.",
    "422": "A parameter or body field is invalid; `error.field` names it.",
    "503": "The event log (etcd) is not reachable.",
}
INSTANCE_ACTIONS = (
    "start", "stop", "reboot", "migrate", "failover", "replace-disks", "grow-disk",
    "activate-disks",
)  # fmt: skip
NODE_ACTIONS = (
    "drain", "undrain", "offline", "online", "evacuate", "migrate", "failover", "confirm-off",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    where: str  # path, query or header
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    path: str
    summary: str
    answer: Any  # a shape, a list of one, or a media type's schema
    ok: str = "200"
    body: type | None = None
    params: tuple[_Param, ...] = ()
    media: str = JSON


def _path(name: str, schema: Schema | None = None) -> _Param:
    return _Param(name, "path", schema or {"type": "string"}, required=True)


_NAME = _path("name")
_JOB_ID = _path("job_id")
_FILTERS = (
    _Param(
        "type",
        "query",
        {"type": "array", "items": {"type": "string"}},
        "event type or prefix (node., step.failed); repeatable",
    ),
    _Param(
        "object",
        "query",
        {"type": "array", "items": {"type": "string"}},
        "object key (instance/vm01) or bare name; repeatable",
    ),
)
_TEXT = {"type": "string"}

_ROUTES = (
    _Route("get", "/api/v1/status", "The cluster at a glance (`corral status`)", shapes.Status),
    _Route("get", "/api/v1/nodes", "Every node (`corral node list`)", list[shapes.NodeRow]),
    _Route(
        "get", "/api/v1/nodes/{name}", "One node (`corral node info`)", shapes.NodeInfo,
        params=(_NAME,),
    ),
    _Route("get", "/api/v1/instances", "Every visible instance", list[shapes.InstanceRow]),
    _Route(
        "get", "/api/v1/instances/{name}", "One instance (`corral instance info`)",
        shapes.InstanceInfo, params=(_NAME,),
    ),
    _Route(
        "get", "/api/v1/jobs", "Recent jobs (the last 50 unless all=true)", list[shapes.Job],
        params=(_Param("all", "query", {"type": "boolean"}, "every job, not only the last 50"),),
    ),
    _Route("get", "/api/v1/jobs/{job_id}", "One job with its log", shapes.JobInfo,
           params=(_JOB_ID,)),
    _Route(
        "get", "/api/v1/events", "The audit log, oldest first (`corral events`)",
        list[shapes.Event],
        params=(
            _Param("since", "query", _TEXT, "a revision, an ISO time or an age (10m, 2h)"),
            *_FILTERS,
            _Param(
                "limit", "query",
                {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
                "only the last N matching events",
            ),
        ),
    ),
    _Route(
        "get", "/api/v1/events/stream",
        "The event log as Server-Sent Events; ids are REVISION.INDEX", _TEXT,
        media="text/event-stream",
        params=(
            _Param("since", "query", {"type": "string", "pattern": "^[0-9]{1,15}$"},
                   "from this revision"),
            *_FILTERS,
            _Param("Last-Event-ID", "header",
                   {"type": "string", "pattern": "^[0-9]{1,15}(\\.[0-9]{1,9})?$"}),
        ),
    ),
    _Route(
        "get", "/api/v1/state", "The status as of a past revision (`corral events --at`)",
        shapes.Status,
        params=(
            _Param("at", "query", {"type": "integer", "minimum": 0, "maximum": 10**15},
                   "the revision", required=True),
        ),
    ),
    _Route("get", "/api/v1/verify", "Findings of `corral cluster verify`", shapes.Verify),
    _Route("get", "/api/v1/desired", "The live desired state", shapes.Desired),
    _Route(
        "post", "/api/v1/desired/plan", "What applying the files would change (`corral plan`)",
        shapes.Plan, body=bodies.DesiredRequest,
    ),
    _Route(
        "post", "/api/v1/desired/apply",
        "Record the files as the desired state (`corral apply`); admin only; 200 when "
        "nothing changes", shapes.ApplyResult, ok="202", body=bodies.DesiredRequest,
    ),
    _Route(
        "post", "/api/v1/instances/{name}/modify",
        "Change memory and/or vCPUs (`corral instance modify`); admin only; 422 naming "
        "the field when it does not fit its nodes or breaks N+1, unless forced (recorded)",
        shapes.Accepted, ok="202", body=bodies.ModifyRequest, params=(_NAME,),
    ),
    _Route(
        "post", "/api/v1/instances/{name}/rename",
        "Rename a stopped instance: its LVs and DRBD resources on both nodes, then the "
        "record (`corral instance rename`); admin only; 422 naming new_name when refused",
        shapes.Accepted, ok="202", body=bodies.RenameRequest, params=(_NAME,),
    ),
    _Route(
        "post", "/api/v1/instances/{name}/nics",
        "Replace the NIC list (`corral instance nics`): removed or changed NICs take effect "
        "at the next start, NICs that stay keep their MACs; admin only; 422 naming the "
        "field (`nics[1].link`) when refused", shapes.Accepted, ok="202",
        body=bodies.NicsRequest, params=(_NAME,),
    ),
    _Route(
        "post", "/api/v1/instances/{name}/remove-disk",
        "Remove the last disk of a stopped instance, its DRBD resource and LVs on both "
        "nodes (`corral instance remove-disk`); admin only; 422 naming disk when refused",
        shapes.Accepted, ok="202", body=bodies.RemoveDiskRequest, params=(_NAME,),
    ),
    _Route(
        "post", "/api/v1/instances/{name}/{action}", "An instance operation as a job",
        shapes.Accepted, ok="202", body=bodies.InstanceActionRequest,
        params=(_NAME, _path("action", {"type": "string", "enum": list(INSTANCE_ACTIONS)})),
    ),
    _Route(
        "post", "/api/v1/nodes/{name}/{action}",
        "A node operation (flags, a job, or confirm-off: admin, reason required)",
        shapes.Accepted, ok="202", body=bodies.ReasonRequest,
        params=(_NAME, _path("action", {"type": "string", "enum": list(NODE_ACTIONS)})),
    ),
    _Route(
        "post", "/api/v1/jobs/{job_id}/cancel", "Cancel a queued job", shapes.Accepted,
        ok="202", body=bodies.ReasonRequest, params=(_JOB_ID,),
    ),
    _Route("get", "/metrics", "Prometheus text exposition", _TEXT, media="text/plain"),
)  # fmt: skip


class _Components:
    """Schemas generated from types, named once under components/schemas."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def of(self, tp: Any, *, request: bool = False) -> Schema:
        if isinstance(tp, dict):
            return tp
        adapter = TypeAdapter(tp)
        if request:
            schema = adapter.json_schema(ref_template=_REF, mode="validation")
        else:
            schema = adapter.json_schema(ref_template=_REF, mode="serialization")
        self.schemas.update(schema.pop("$defs", {}))
        name = getattr(tp, "__name__", None)
        if name and schema.get("type") == "object":
            self.schemas[name] = schema
            return {"$ref": _REF.format(model=name)}
        return schema


def _operation(route: _Route, c: _Components) -> Schema:
    answer = {"content": {route.media: {"schema": c.of(route.answer)}}}
    responses: Schema = {route.ok: {"description": route.summary, **answer}}
    if route.ok == "202" and route.body is bodies.DesiredRequest:
        responses["200"] = {"description": "Nothing to change.", **answer}
    error = {"content": {JSON: {"schema": c.of(shapes.Error)}}}
    responses.update({code: {"description": text, **error} for code, text in _ERROR_CODES.items()})
    op: Schema = {
        "summary": route.summary,
        "parameters": [_parameter(p) for p in route.params],
        "responses": responses,
    }
    if route.body is not None:
        op["requestBody"] = {
            "required": route.body is bodies.DesiredRequest,
            "content": {JSON: {"schema": c.of(route.body, request=True)}},
        }
    return op


def _parameter(p: _Param) -> Schema:
    out: Schema = {"name": p.name, "in": p.where, "required": p.required, "schema": p.schema}
    if p.description:
        out["description"] = p.description
    if p.schema.get("type") == "array":
        out.update(style="form", explode=True)
    return out


@cache
def openapi_document() -> dict[str, Any]:
    c = _Components()
    paths: dict[str, Any] = {}
    for route in _ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route, c)
    paths[OPENAPI_PATH] = {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "corral native API",
            "version": "1",
            "description": "The orchestrator's HTTP API: the views and operations of the "
            "`corral` command line, with API tokens (Authorization: Bearer).",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(c.schemas.items())),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }


async def get_openapi(request: web.Request) -> web.Response:
    del request
    return json_response(openapi_document())


def add_openapi_route(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, get_openapi)
