"""The Ganeti RAPI v2 compatible HTTPS server: Ganeti's RAPI client, Ganeti Web
Manager-style tools and htools (`hbal -m https://HOST:PORT`) drive corral with it.

Serves TLS with the certificate in `cert_dir` (self-signed on first start,
`orchestrator.tls_cert`); authenticates HTTP Basic credentials against a Ganeti
users file (`orchestrator.rapi.users`), refusing (429) an address with too many
failed logins; serves anonymous reads only when asked to (`anonymous_reads=True`,
as Ganeti does by default: names, addresses and tags of everything); htools
authenticate with `-m https://USER:PASSWORD@HOST:PORT`; refuses (415) any change
not sent as `Content-Type: application/json`, so a browser holding Basic
credentials cannot be driven cross-site with a form or text/plain post; answers
errors with Ganeti's
`{"code", "message", "explain"}` body and 401s with
`WWW-Authenticate: Basic realm="Ganeti Remote API"`.

Must not log passwords, Authorization headers or request bodies, and must not hold
state of its own beyond the job-id index (`orchestrator.rapi.job_index`): it renders the
orchestrator's folded state and appends through `orchestrator.operations`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import structlog
from aiohttp import web

from events.state import ClusterState
from events.store import EventStore
from orchestrator.rapi.cluster_routes import cluster_routes, node_routes
from orchestrator.rapi.console import console_routes
from orchestrator.rapi.context import (
    ANONYMOUS,
    PRINCIPAL_KEY,
    Handler,
    Rapi,
    RapiError,
    error_for,
    reply,
)
from orchestrator.rapi.instance_changes import instance_change_routes
from orchestrator.rapi.instance_reinstall import instance_reinstall_routes
from orchestrator.rapi.instance_routes import instance_routes
from orchestrator.rapi.job_index import JobIndex
from orchestrator.rapi.job_routes import job_routes
from orchestrator.rapi.users import REALM, THROTTLED, RapiUsers
from orchestrator.tls_cert import ensure_self_signed, server_context

log = structlog.get_logger("corral.rapi")

DEFAULT_PORT = 5080
MAX_BODY_BYTES = 1 << 20


def _error_response(err: RapiError) -> web.Response:
    resp = reply(err.body())
    resp.set_status(err.code)
    if err.code == 401:
        resp.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    return resp


MUTATIONS = frozenset({"POST", "PUT", "DELETE", "PATCH"})


def _middleware(users: RapiUsers, *, anonymous_reads: bool) -> Callable[..., object]:
    @web.middleware
    async def rapi_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        peer = request.remote or ""
        user = "-"
        try:
            if request.method in MUTATIONS and request.content_type != "application/json":
                # A browser holding Basic credentials can be made to send
                # text/plain or form posts cross-site without a preflight; not JSON.
                raise RapiError(415, "a change must be sent as Content-Type: application/json")
            auth = await users.authenticate_async(request.headers.get("Authorization"), peer=peer)
            if auth.error == THROTTLED:
                raise RapiError(429, "too many failed logins from this address; try later")
            if auth.error:
                raise RapiError(401, "invalid user name or password")
            if auth.principal is None:
                if not anonymous_reads or request.method not in ("GET", "HEAD"):
                    raise RapiError(401, "this request needs a user (HTTP Basic authentication)")
                request[PRINCIPAL_KEY] = ANONYMOUS
            else:
                request[PRINCIPAL_KEY] = auth.principal
            user = request[PRINCIPAL_KEY].name
            response = await handler(request)
        except web.HTTPException as exc:
            # aiohttp's routing errors (no such resource, wrong method)
            code = exc.status if exc.status in (400, 404, 405, 413) else 400
            response = _error_response(RapiError(code, exc.reason or ""))
        except Exception as exc:
            err = error_for(exc)
            if err is None:
                log.exception("rapi request failed", method=request.method, path=request.path)
                err = RapiError(500, f"{type(exc).__name__}: {exc}")
            response = _error_response(err)
        log.info(
            "rapi request",
            method=request.method,
            path=request.path,
            status=response.status,
            user=user,
            peer=peer,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return response

    return rapi_middleware


def build_app(
    *,
    state: Callable[[], ClusterState],
    store: EventStore,
    users: RapiUsers,
    anonymous_reads: bool = False,
    clock: Callable[[], float] = time.time,
) -> tuple[web.Application, JobIndex]:
    """The aiohttp application (no socket): for `start_rapi` and for tests."""
    jobs = JobIndex(store=store, clock=clock)
    rapi = Rapi(state=state, store=store, jobs=jobs, clock=clock)
    app = web.Application(
        middlewares=[_middleware(users, anonymous_reads=anonymous_reads)],  # type: ignore[list-item]
        client_max_size=MAX_BODY_BYTES,
    )
    app.add_routes(cluster_routes(rapi))
    app.add_routes(node_routes(rapi))
    app.add_routes(instance_routes(rapi))
    app.add_routes(instance_change_routes(rapi))
    app.add_routes(instance_reinstall_routes(rapi))
    app.add_routes(console_routes(rapi))
    app.add_routes(job_routes(rapi))
    return app, jobs


async def start_rapi(
    *,
    host: str,
    port: int,
    state: Callable[[], ClusterState],
    store: EventStore,
    users: RapiUsers,
    cert_dir: Path,
    anonymous_reads: bool = False,
    clock: Callable[[], float] = time.time,
) -> web.AppRunner:
    """Serve RAPI v2 over HTTPS on host:port until `await runner.cleanup()`.
    `state` returns the orchestrator's current folded state (`engine.state`);
    the job index reads the log once before the first request is served."""
    paths = ensure_self_signed(cert_dir=cert_dir, hostnames=[host])
    if paths.created:
        log.info("rapi certificate generated", cert=str(paths.cert))
    app, jobs = build_app(
        state=state, store=store, users=users, anonymous_reads=anonymous_reads, clock=clock
    )
    await jobs.refresh()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=server_context(paths))
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info(
        "rapi listening",
        url=f"https://{host}:{port}",
        users=len(users.names),
        anonymous_reads=anonymous_reads,
    )
    return runner
