"""The native HTTP API of the orchestrator (aiohttp): builds the application with
its routes (`/api/v1/...`, `/api/v1/openapi.json`, `/metrics`, and the static
dashboard of `orchestrator.api.dashboard` at `/`), authenticates
every request with an API token, turns every error into a JSON body
(`{"error": {"code", "message", "field"}}`; unexpected exceptions become a 500
without a traceback, logged with structlog), limits bodies to 1 MiB, counts
requests for `/metrics`, and starts/stops the listening socket.

Must not hold cluster state of its own (it reads the orchestrator's folded state
through `state()`, always current) or act on nodes; sends no CORS headers.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Required, TypedDict, Unpack

import structlog
from aiohttp import web

from events.state import ClusterState
from events.store import EtcdUnavailable, EventStore
from orchestrator.api.auth import ApiAuth
from orchestrator.api.context import (
    CTX,
    LOG_KEY,
    PRINCIPAL_KEY,
    ApiContext,
    ApiError,
    ctx_of,
    json_response,
)
from orchestrator.api.events_stream import add_stream_routes
from orchestrator.api.limits import LIMITS, ApiLimits
from orchestrator.api.metrics import ApiMetrics
from orchestrator.api.openapi import OPENAPI_PATH, add_openapi_route
from orchestrator.api.routes_read import add_read_routes
from orchestrator.api.routes_write import add_write_routes

log = structlog.get_logger("corral.api")

MAX_BODY = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def _route(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return json_response(
        {"error": {"code": code, "message": message, "field": field}}, status=status
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: every failure becomes a JSON error; counts every request."""
    started = time.monotonic()
    route = _route(request)
    response: web.StreamResponse
    try:
        response = await handler(request)
    except ApiError as exc:
        response = json_response(exc.body(), status=exc.status)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="corral"'
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        field = "body" if exc.status == 413 else None
        message = exc.reason if exc.status != 413 else f"the body is larger than {MAX_BODY} bytes"
        response = _error(exc.status, code, message, field)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except EtcdUnavailable:
        request.get(LOG_KEY, log).warning("api request: etcd unavailable", path=request.path)
        response = _error(503, "unavailable", "the event log (etcd) is not reachable; retry")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        request.get(LOG_KEY, log).error(
            "api request failed",
            path=request.path,
            method=request.method,
            error=type(exc).__name__,
            exc_info=True,
        )
        response = _error(500, "internal", "internal error; the orchestrator's log has details")
    metrics = ctx_of(request).metrics
    metrics.requests.labels(method=request.method, route=route, status=str(response.status)).inc()
    if isinstance(response, web.Response):  # streams are not timed
        metrics.request_seconds.labels(route=route).observe(time.monotonic() - started)
    return response


def _is_dashboard(path: str) -> bool:
    """The dashboard's static page and assets: no data, so no token (the page asks
    for one and sends it with every API call)."""
    return path == "/" or (path.startswith("/dashboard/") and path.count("/") == 2)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate (except the OpenAPI document, the dashboard's static files
    and, when public, /metrics) and
    bind the request's logger to its path and principal."""
    ctx = ctx_of(request)
    bound = log.bind(method=request.method, path=request.path, remote=request.remote)
    request[LOG_KEY] = bound
    public = request.path == OPENAPI_PATH or (ctx.public_metrics and request.path == "/metrics")
    static = request.method == "GET" and _is_dashboard(request.path)
    if public or static:
        return await handler(request)
    result = ctx.auth.authenticate(request.headers.get("Authorization"))
    if result.principal is None:
        reason = result.failure.value if result.failure else "unknown"
        ctx.metrics.auth_failures.labels(reason=reason).inc()
        bound.warning("api authentication failed", reason=reason)
        raise ApiError(401, "unauthenticated", "a valid `Authorization: Bearer TOKEN` is needed")
    request[PRINCIPAL_KEY] = result.principal
    request[LOG_KEY] = bound.bind(principal=result.principal.name)
    return await handler(request)


def build_app(
    *,
    state: Callable[[], ClusterState],
    store: EventStore,
    auth: ApiAuth,
    metrics: ApiMetrics | None = None,
    heartbeat_s: float = 15.0,
    fold_wait_s: float = 5.0,
    public_metrics: bool = False,
    dashboard: bool = True,
) -> web.Application:
    """The aiohttp application. `state` returns the orchestrator's current folded
    state; `metrics` is shared with whoever feeds it (e.g. the SSH layer);
    `dashboard` mounts `orchestrator.api.dashboard` at `/`."""
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=MAX_BODY
    )
    app[CTX] = ApiContext(
        state=state,
        store=store,
        auth=auth,
        metrics=metrics or ApiMetrics(),
        heartbeat_s=heartbeat_s,
        fold_wait_s=fold_wait_s,
        public_metrics=public_metrics,
    )
    app[LIMITS] = ApiLimits()

    async def stop_workers(app: web.Application) -> None:
        app[CTX].workers.close()

    app.on_cleanup.append(stop_workers)
    add_stream_routes(app)
    add_read_routes(app)
    add_write_routes(app)
    add_openapi_route(app)
    if dashboard:
        from orchestrator.api.dashboard import add_dashboard_routes

        add_dashboard_routes(app)
    return app


class AppOptions(TypedDict, total=False):
    """`build_app`'s options, for callers of `start_api`."""

    state: Required[Callable[[], ClusterState]]
    store: Required[EventStore]
    auth: Required[ApiAuth]
    metrics: ApiMetrics | None
    heartbeat_s: float
    fold_wait_s: float
    public_metrics: bool
    dashboard: bool


async def start_api(
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    **options: Unpack[AppOptions],
) -> web.AppRunner:
    """Listen on host:port (port 0: any free port; `runner.addresses` says which),
    over TLS with `ssl_context`, with the application `build_app(**options)` makes.
    Stop with `await runner.cleanup()`."""
    app = build_app(**options)
    auth = options["auth"]
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    log.info(
        "api listening", addresses=[str(a) for a in runner.addresses], principals=len(auth.entries)
    )
    return runner
