"""The native API's read routes: status, nodes, instances, jobs, the event log
(filtered like `corral events`), the status at a past revision (`events --at`),
`cluster verify`, the live desired state, and `/metrics`. Every answer is the
same JSON the CLI prints with `--json`, narrowed for scoped principals to their
own instances (others' are 404).

Read-only: appends nothing and never talks to nodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Any, TypeVar

from aiohttp import web

from events.codec import to_plain
from events.ids import InstanceName, JobId
from events.loading import load_state
from events.model import Event
from orchestrator.api.context import (
    ApiError,
    ctx_of,
    event_filter,
    event_visible,
    json_response,
    parse_since_query,
    principal_of,
    query_bool,
    query_int,
    require_instance,
    require_node,
    require_unscoped,
    scoped_status,
    visible_instance,
    visible_job,
    visible_names,
)
from orchestrator.api.limits import SCAN_LIMIT, limits_of
from orchestrator.api.metrics import CONTENT_TYPE, render_metrics
from orchestrator.cluster_report import (
    event_json,
    instance_info,
    instance_rows_json,
    job_json,
    node_info,
    node_rows,
    row_json,
    status_dict,
    verify,
)
from orchestrator.offloop import TooSlow, in_own_loop

MAX_EVENTS = 10_000
MAX_REVISION = 10**15
# A log scan or a past state, read and folded off the reactors' loop, at most this long.
OFF_LOOP_TIMEOUT_S = 60.0
T = TypeVar("T")


async def get_status(request: web.Request) -> web.Response:
    state = ctx_of(request).state()
    now = time.time()
    d = scoped_status(status_dict(state, now=now), state, principal_of(request), now=now)
    return json_response(d)


async def list_nodes(request: web.Request) -> web.Response:
    state = ctx_of(request).state()
    return json_response([row_json(asdict(r)) for r in node_rows(state)])


async def get_node(request: web.Request) -> web.Response:
    state = ctx_of(request).state()
    name = require_node(state, request.match_info["name"])
    principal = principal_of(request)
    return json_response(
        node_info(state, name, visible=lambda n: visible_instance(state, principal, n))
    )


async def list_instances(request: web.Request) -> web.Response:
    state = ctx_of(request).state()
    now = time.time()
    names = visible_names(state, principal_of(request))
    return web.Response(
        text=instance_rows_json(state, names, now=now), content_type="application/json"
    )


async def get_instance(request: web.Request) -> web.Response:
    state = ctx_of(request).state()
    spec = require_instance(state, principal_of(request), request.match_info["name"])
    return json_response(instance_info(state, InstanceName(spec.name), now=time.time()))


async def list_jobs(request: web.Request) -> web.Response:
    state = ctx_of(request).state()
    principal = principal_of(request)
    jobs = sorted(
        (j for j in state.jobs.values() if visible_job(state, principal, j)),
        key=lambda j: j.job_id,
    )
    if not query_bool(request, "all"):
        jobs = jobs[-50:]
    return json_response([job_json(j, with_log=False) for j in jobs])


async def get_job(request: web.Request) -> web.Response:
    state = ctx_of(request).state()
    job_id = request.match_info["job_id"]
    job = state.jobs.get(JobId(job_id))
    if job is None or not visible_job(state, principal_of(request), job):
        raise ApiError(404, "not_found", f"no job {job_id!r}", field="job_id")
    return json_response(job_json(job, with_log=True))


async def list_events(request: web.Request) -> web.Response:
    """The last `limit` matching events of one page of the log: from `since` (a
    revision; else about the newest SCAN_LIMIT revisions) and at most SCAN_LIMIT
    events read. `X-Corral-Next-Since` names where the next page starts when the
    scan stopped before the head; `X-Corral-Scanned-From` where this one began."""
    ctx = ctx_of(request)
    principal = principal_of(request)
    from_rev, since_time = parse_since_query(request.query.get("since"), now=time.time())
    limit = query_int(request, "limit", default=1000, minimum=1, maximum=MAX_EVENTS)
    flt = event_filter(request, since_time=since_time)
    state = ctx.state()

    async def scan() -> tuple[list[dict[str, Any]], int, int]:
        """On a loop and a connection of its own (safety rule 9)."""
        matched: list[tuple[int, Event]] = []
        start, scanned, next_since, last = from_rev, 0, 0, 0
        async with ctx.store.another() as store:
            if start <= 0:
                start = max(1, await store.current_revision() - SCAN_LIMIT)
            async for revision, event in store.read_all(from_revision=start):
                if scanned >= SCAN_LIMIT and revision != last:
                    next_since = revision
                    break
                scanned, last = scanned + 1, revision
                if flt.matches(event) and event_visible(event, state, principal):
                    matched.append((revision, event))
                    if len(matched) > 2 * limit:
                        del matched[:-limit]
        return [event_json(r, e) for r, e in matched[-limit:]], start, next_since

    async with limits_of(request).heavy_read():
        rows, from_rev, next_since = await _off_loop(scan)
    response = json_response(rows)
    response.headers["X-Corral-Scanned-From"] = str(from_rev)
    if next_since:
        response.headers["X-Corral-Next-Since"] = str(next_since)
    return response


async def _off_loop(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return await in_own_loop(work, timeout_s=OFF_LOOP_TIMEOUT_S)
    except TooSlow:
        raise ApiError(
            503, "too_slow", f"the log read took over {OFF_LOOP_TIMEOUT_S:.0f}s; retry later"
        ) from None


async def state_at(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    if "at" not in request.query:
        raise ApiError(422, "invalid", "at (a revision) is required", field="at")
    at = query_int(request, "at", default=0, minimum=0, maximum=MAX_REVISION)
    principal = principal_of(request)

    async def past() -> dict[str, Any]:
        """Folded on a loop and a connection of its own (safety rule 9)."""
        async with ctx.store.another() as store:
            state = await load_state(store, at=at)
        now = time.time()
        return scoped_status(status_dict(state, now=now), state, principal, now=now)

    async with limits_of(request).heavy_read():
        body = await _off_loop(past)
    return json_response(body)


async def get_verify(request: web.Request) -> web.Response:
    state = ctx_of(request).state()
    principal = principal_of(request)
    findings = [
        f
        for f in verify(state, now=time.time())
        if not principal.scoped
        or (
            f.subject.startswith("instance/")
            and visible_instance(state, principal, f.subject.partition("/")[2])
        )
    ]
    errors = sum(1 for f in findings if f.severity == "error")
    return json_response({"findings": [asdict(f) for f in findings], "errors": errors})


async def get_desired(request: web.Request) -> web.Response:
    """The live desired state (files applied plus imperative changes since)."""
    state = ctx_of(request).state()
    principal = principal_of(request)
    d = state.desired
    out: dict[str, Any] = {
        "cluster": d.name,
        "policy": to_plain(d.policy),
        "groups": [] if principal.scoped else [to_plain(d.groups[g]) for g in sorted(d.groups)],
        "nodes": [] if principal.scoped else [to_plain(d.nodes[n]) for n in sorted(d.nodes)],
        "instances": [to_plain(d.instances[n]) for n in visible_names(state, principal)],
        "revision": state.revision,
    }
    return json_response(out)


async def get_metrics(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    if not ctx.public_metrics:
        require_unscoped(request, "read cluster-wide metrics")
    text = render_metrics(ctx.state(), ctx.metrics, now=time.time())
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


def add_read_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/status", get_status)
    app.router.add_get("/api/v1/nodes", list_nodes)
    app.router.add_get("/api/v1/nodes/{name}", get_node)
    app.router.add_get("/api/v1/instances", list_instances)
    app.router.add_get("/api/v1/instances/{name}", get_instance)
    app.router.add_get("/api/v1/jobs", list_jobs)
    app.router.add_get("/api/v1/jobs/{job_id}", get_job)
    app.router.add_get("/api/v1/events", list_events)
    app.router.add_get("/api/v1/state", state_at)
    app.router.add_get("/api/v1/verify", get_verify)
    app.router.add_get("/api/v1/desired", get_desired)
    app.router.add_get("/metrics", get_metrics)
