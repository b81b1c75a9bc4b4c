"""The OpenAPI 3.0 document of the native API, served (without authentication) at
`/api/v1/openapi.json`: every route, its parameters, request bodies, and the
schemas of every response it can give (schemathesis checks responses against it
in `tests/lab/test_api_schema.py`).

Pure data, built once: must not read state or do I/O. When a route or a view changes
shape, change it here in the same commit.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web

from orchestrator.api.context import json_response

OPENAPI_PATH = "/api/v1/openapi.json"
JSON = "application/json"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(
    props: dict[str, Schema], *, required: list[str] | None = None, extra: bool = False
) -> Schema:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": extra,
    }


def _arr(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _null(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
STRS = _arr(STR)

_INSTANCE_ROW = {
    "name": STR,
    "status": STR,
    "primary": _null(STR),
    "secondary": _null(STR),
    "memory_mib": INT,
    "vcpus": INT,
    "disk_mib": INT,
    "degraded": BOOL,
    "converged": BOOL,
    "restart_required": BOOL,
    "waiting": STRS,
    "tags": STRS,
}
_NODE_ROW = {
    "name": STR,
    "health": STR,
    "flags": STRS,
    "memory_mib": INT,
    "memory_used_mib": INT,
    "n1_reserve_mib": INT,
    "n1_ok": BOOL,
    "disk_mib": INT,
    "disk_used_mib": INT,
    "primaries": INT,
    "secondaries": INT,
    "vms_running": INT,
}
_JOB = {
    "job_id": STR,
    "kind": STR,
    "targets": STRS,
    "params": {"type": "object", "additionalProperties": STR},
    "status": {
        "type": "string",
        "enum": ["queued", "running", "success", "error", "canceling", "canceled"],
    },
    "actor": STR,
    "reason": STR,
    "submitted_at": NUM,
    "started_at": _null(NUM),
    "ended_at": _null(NUM),
    "error": STR,
}
_ACCEPTED = {"job_id": _null(STR), "revision": INT, "event_ids": STRS}

SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {
            "error": _obj({"code": STR, "message": STR, "field": _null(STR)}),
            "problems": _arr(_ref("Problem")),
        },
        required=["error"],
    ),
    "Problem": _obj(
        {"file": STR, "line": INT, "column": INT, "field": STR, "message": STR},
        required=["message"],
    ),
    "Accepted": _obj(_ACCEPTED),
    "ApplyResult": _obj({**_ACCEPTED, "changes": INT}),
    "InstanceRow": _obj(_INSTANCE_ROW),
    "InstanceInfo": _obj(
        {
            **_INSTANCE_ROW,
            "os": STR,
            "power": {"type": "string", "enum": ["running", "stopped"]},
            "disks": _arr(
                _obj({"index": INT, "size_mib": INT, "drbd_minor": INT, "drbd_port": INT})
            ),
            "nics": _arr(_obj({"mac": _null(STR), "link": STR, "mode": STR, "ip": _null(STR)})),
            "placed_by": _null(STR),
            "refusal": _null(STR),
            "last_step": _null(
                _obj(
                    {
                        "step": STR,
                        "node": _null(STR),
                        "ok": _null(BOOL),
                        "error": STR,
                        "at": NUM,
                        "failures_in_a_row": INT,
                    }
                )
            ),
            "version": INT,
        }
    ),
    "NodeRow": _obj(_NODE_ROW),
    "NodeInfo": _obj(
        {
            **_NODE_ROW,
            "address": STR,
            "port": INT,
            "replication_address": STR,
            "group": STR,
            "tags": STRS,
            "fence_agent": _null(STR),
            "fenced_by": STR,
            "health_detail": STR,
            "boot_id": _null(STR),
            "instances_primary": STRS,
            "instances_secondary": STRS,
        }
    ),
    "Job": _obj(_JOB),
    "JobInfo": _obj({**_JOB, "log": _arr(_obj({"time": NUM, "line": STR}))}),
    "Event": _obj(
        {
            "revision": INT,
            "type": STR,
            "objects": STRS,
            "id": STR,
            "time": NUM,
            "actor": STR,
            "reason": STR,
            "causation_id": _null(STR),
            "correlation_id": _null(STR),
        },
        extra=True,
    ),
    "Status": _obj(
        {
            "cluster": STR,
            "revision": INT,
            "events": INT,
            "nodes": _obj(
                {"total": INT, "by_health": {"type": "object", "additionalProperties": STRS}}
            ),
            "instances": _obj(
                {
                    "total": INT,
                    "by_status": {"type": "object", "additionalProperties": INT},
                    "degraded": STRS,
                    "restart_required": STRS,
                }
            ),
            "n_plus_one": _obj({"policy": BOOL, "failing_nodes": STRS}),
            "alerts": _arr(_obj({"alert": STR, "severity": STR, "subject": STR, "message": STR})),
            "active_jobs": _arr(_obj({"job_id": STR, "kind": STR, "targets": STRS, "status": STR})),
            "last_apply": _null(
                _obj({"digest": STR, "author": STR, "message": STR, "files": STRS, "time": NUM})
            ),
            "node_table": _arr(_ref("NodeRow")),
        }
    ),
    "Verify": _obj(
        {
            "findings": _arr(
                _obj(
                    {
                        "severity": {"type": "string", "enum": ["error", "warning"]},
                        "check": STR,
                        "subject": STR,
                        "message": STR,
                    }
                )
            ),
            "errors": INT,
        }
    ),
    "Desired": _obj(
        {
            "cluster": STR,
            "policy": {"type": "object"},
            "groups": _arr({"type": "object"}),
            "nodes": _arr({"type": "object"}),
            "instances": _arr({"type": "object"}),
            "revision": INT,
        }
    ),
    "Plan": _obj(
        {
            "changes": _arr(
                _obj(
                    {
                        "action": {
                            "type": "string",
                            "enum": ["create", "modify", "remove", "start", "stop"],
                        },
                        "kind": {"type": "string", "enum": ["cluster", "node", "instance"]},
                        "name": STR,
                        "fields": _arr(_obj({"field": STR, "old": STR, "new": STR})),
                        "notes": STRS,
                        "placement": _obj(
                            {
                                "primary": _null(STR),
                                "secondary": _null(STR),
                                "refusal": _null(STR),
                            }
                        ),
                    },
                    required=["action", "kind", "name", "fields", "notes"],
                )
            ),
            "problems": STRS,
            "drift": BOOL,
            "has_changes": BOOL,
        }
    ),
    "DesiredRequest": _obj(
        {
            "files": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": _obj(
                    {
                        "name": {"type": "string", "minLength": 1, "maxLength": 255},
                        "text": STR,
                    }
                ),
            },
            "allow_destroy": BOOL,
            "message": {"type": "string", "maxLength": 2000},
        },
        required=["files"],
    ),
    "InstanceActionRequest": _obj(
        {
            "reason": {"type": "string", "maxLength": 2000},
            "mode": {"type": "string", "enum": ["change-secondary", "secondary-rebuild"]},
            "new_secondary": STR,
            "disk": {"type": "integer", "minimum": 0},
            "amount_mib": {"type": "integer", "minimum": 1},
        },
        required=[],
    ),
    "ReasonRequest": _obj({"reason": {"type": "string", "maxLength": 2000}}, required=[]),
}

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


def _responses(ok: str, schema: Schema, description: str, *, media: str = JSON) -> dict[str, Any]:
    out: dict[str, Any] = {ok: {"description": description, "content": {media: {"schema": schema}}}}
    for code, text in _ERROR_CODES.items():
        out[code] = {"description": text, "content": {JSON: {"schema": _ref("Error")}}}
    return out


def _path_param(name: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema or STR}


def _query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    out: Schema = {"name": name, "in": "query", "required": required, "schema": schema}
    out["description"] = description
    if schema.get("type") == "array":
        out.update(style="form", explode=True)
    return out


def _get(summary: str, schema: Schema, *, params: list[Schema] | None = None) -> Schema:
    return {
        "summary": summary,
        "parameters": params or [],
        "responses": _responses("200", schema, summary),
    }


def _post(summary: str, body: str, ok: str, schema: Schema, *, params: list[Schema]) -> Schema:
    op: Schema = {
        "summary": summary,
        "parameters": params,
        "requestBody": {
            "required": body == "DesiredRequest",
            "content": {JSON: {"schema": _ref(body)}},
        },
        "responses": _responses(ok, schema, summary),
    }
    if ok == "202" and body == "DesiredRequest":  # apply: 200 when nothing changes
        op["responses"]["200"] = {
            "description": "Nothing to change.",
            "content": {JSON: {"schema": schema}},
        }
    return op


_FILTERS = [
    _query("type", _arr(STR), "event type or prefix (node., step.failed); repeatable"),
    _query("object", _arr(STR), "object key (instance/vm01) or bare name; repeatable"),
]


@cache
def openapi_document() -> dict[str, Any]:
    name = _path_param("name")
    instance_actions = _path_param(
        "action",
        {
            "type": "string",
            "enum": [
                "start",
                "stop",
                "reboot",
                "migrate",
                "failover",
                "replace-disks",
                "grow-disk",
                "activate-disks",
            ],
        },
    )
    node_actions = _path_param(
        "action",
        {
            "type": "string",
            "enum": [
                "drain",
                "undrain",
                "offline",
                "online",
                "evacuate",
                "migrate",
                "failover",
                "confirm-off",
            ],
        },
    )
    job_id = _path_param("job_id")
    paths: dict[str, Any] = {
        "/api/v1/status": {
            "get": _get("The cluster at a glance (`corral status`)", _ref("Status"))
        },
        "/api/v1/nodes": {"get": _get("Every node (`corral node list`)", _arr(_ref("NodeRow")))},
        "/api/v1/nodes/{name}": {
            "get": _get("One node (`corral node info`)", _ref("NodeInfo"), params=[name])
        },
        "/api/v1/instances": {"get": _get("Every visible instance", _arr(_ref("InstanceRow")))},
        "/api/v1/instances/{name}": {
            "get": _get(
                "One instance (`corral instance info`)", _ref("InstanceInfo"), params=[name]
            )
        },
        "/api/v1/jobs": {
            "get": _get(
                "Recent jobs (the last 50 unless all=true)",
                _arr(_ref("Job")),
                params=[_query("all", BOOL, "every job, not only the last 50")],
            )
        },
        "/api/v1/jobs/{job_id}": {
            "get": _get("One job with its log", _ref("JobInfo"), params=[job_id])
        },
        "/api/v1/events": {
            "get": _get(
                "The audit log, oldest first (`corral events`)",
                _arr(_ref("Event")),
                params=[
                    _query("since", STR, "a revision, an ISO time or an age (10m, 2h)"),
                    *_FILTERS,
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
                        "only the last N matching events",
                    ),
                ],
            )
        },
        "/api/v1/events/stream": {
            "get": {
                "summary": "The event log as Server-Sent Events; ids are REVISION.INDEX",
                "parameters": [
                    _query(
                        "since",
                        {"type": "string", "pattern": "^[0-9]{1,15}$"},
                        "from this revision",
                    ),
                    *_FILTERS,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]{1,15}(\\.[0-9]{1,9})?$"},
                    },
                ],
                "responses": _responses("200", STR, "text/event-stream", media="text/event-stream"),
            }
        },
        "/api/v1/state": {
            "get": _get(
                "The status as of a past revision (`corral events --at`)",
                _ref("Status"),
                params=[
                    _query(
                        "at",
                        {"type": "integer", "minimum": 0, "maximum": 10**15},
                        "the revision",
                        required=True,
                    )
                ],
            )
        },
        "/api/v1/verify": {"get": _get("Findings of `corral cluster verify`", _ref("Verify"))},
        "/api/v1/desired": {"get": _get("The live desired state", _ref("Desired"))},
        "/api/v1/desired/plan": {
            "post": _post(
                "What applying the files would change (`corral plan`)",
                "DesiredRequest",
                "200",
                _ref("Plan"),
                params=[],
            )
        },
        "/api/v1/desired/apply": {
            "post": _post(
                "Record the files as the desired state (`corral apply`); admin only",
                "DesiredRequest",
                "202",
                _ref("ApplyResult"),
                params=[],
            )
        },
        "/api/v1/instances/{name}/{action}": {
            "post": _post(
                "An instance operation as a job",
                "InstanceActionRequest",
                "202",
                _ref("Accepted"),
                params=[name, instance_actions],
            )
        },
        "/api/v1/nodes/{name}/{action}": {
            "post": _post(
                "A node operation (flags, a job, or confirm-off: admin, reason required)",
                "ReasonRequest",
                "202",
                _ref("Accepted"),
                params=[name, node_actions],
            )
        },
        "/api/v1/jobs/{job_id}/cancel": {
            "post": _post(
                "Cancel a queued job", "ReasonRequest", "202", _ref("Accepted"), params=[job_id]
            )
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "responses": _responses("200", STR, "metrics", media="text/plain"),
            }
        },
        OPENAPI_PATH: {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.0",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "corral native API",
            "version": "1",
            "description": "The orchestrator's HTTP API: the views and operations of the "
            "`corral` command line, with API tokens (Authorization: Bearer).",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }


async def get_openapi(request: web.Request) -> web.Response:
    del request
    return json_response(openapi_document())


def add_openapi_route(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, get_openapi)
