"""`GET /api/v1/events/stream`: the event log as Server-Sent Events, from
`EventStore.subscribe` (exactly once, in order, across etcd reconnects), with the
filters of `/api/v1/events` (`type`, `object`) and, for scoped principals, only
events about their own instances. Comment lines keep idle connections alive.

Event ids are `REVISION.INDEX`: the etcd revision of the append and the event's
position in it (one append may hold several events). A client that reconnects with
`Last-Event-ID: 812.2` (or `since=812`, or `Last-Event-ID: 812`, meaning "after all
of revision 812") gets every later event, none twice. The `data:` line is the
event's JSON as `/api/v1/events` returns it (including `revision`).

Read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

from aiohttp import web

from events.model import Event
from orchestrator.api.context import (
    ApiError,
    ctx_of,
    event_filter,
    event_visible,
    log_of,
    principal_of,
)
from orchestrator.api.limits import limits_of
from orchestrator.cluster_report import event_json

_EVENT_ID = re.compile(r"^(\d{1,15})(?:\.(\d{1,9}))?$")
QUEUE_SIZE = 512


def resume_point(*, last_event_id: str | None, since: str | None) -> tuple[int, int] | None:
    """Where to start: (revision, index of the first event to send at it), or None
    for "only what is appended from now on". `Last-Event-ID` wins over `since`."""
    if last_event_id:
        m = _EVENT_ID.fullmatch(last_event_id.strip())
        if not m:
            raise ApiError(
                422,
                "invalid",
                "Last-Event-ID must be REVISION or REVISION.INDEX",
                field="Last-Event-ID",
            )
        revision = int(m.group(1))
        if m.group(2) is None:
            return revision + 1, 0
        return revision, int(m.group(2)) + 1
    if since:
        if not since.isascii() or not since.isdigit() or len(since) > 15:
            raise ApiError(422, "invalid", "since must be a revision number", field="since")
        return int(since), 0
    return None


def sse_frame(revision: int, index: int, event: Event) -> bytes:
    data = json.dumps(event_json(revision, event), default=str, separators=(",", ":"))
    return f"id: {revision}.{index}\ndata: {data}\n\n".encode()


async def events_stream(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    async with limits_of(request).stream(principal.name):
        return await _stream(request)


async def _stream(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    principal = principal_of(request)
    start = resume_point(
        last_event_id=request.headers.get("Last-Event-ID"), since=request.query.get("since")
    )
    flt = event_filter(request)
    if start is None:
        start = (await ctx.store.current_revision() + 1, 0)
    first_rev, first_index = start
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue(maxsize=QUEUE_SIZE)

    async def pump() -> None:
        async for item in ctx.store.subscribe(max(first_rev, 1)):
            await queue.put(item)

    log = log_of(request)
    log.info("event stream opened", revision=first_rev, index=first_index)
    task = asyncio.create_task(pump(), name="corral-api-sse")
    current, index = -1, -1
    sent = 0
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getter, task}, timeout=ctx.heartbeat_s, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                if task in done:  # the subscription ended: surface why, end the stream
                    task.result()
                    break
                await response.write(b": heartbeat\n\n")
                continue
            revision, event = getter.result()
            if revision != current:
                current, index = revision, 0
            else:
                index += 1
            if revision == first_rev and index < first_index:
                continue
            if not flt.matches(event) or not event_visible(event, ctx.state(), principal):
                continue
            await response.write(sse_frame(revision, index, event))
            sent += 1
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        log.info("event stream closed", sent=sent)
    return response


def add_stream_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/events/stream", events_stream)
