"""Ending a group of asyncio tasks for sure: the one way a term's reactors and
their reconcile passes are stopped.

Holds no state and starts nothing; it only cancels what it is given and waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection


async def cancel_all(tasks: Collection[asyncio.Task[None]], *, again_s: float = 0.5) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again any
    that lives on. On Python 3.11 `asyncio.wait_for` returns its inner result (or
    raises its inner exception) when that completes in the same turn as the
    cancellation, and the cancellation is lost: a reactor loop that catches
    Exception (a probe loop, when the SSH connect is refused just then) goes on
    forever, and a term's end that waited for it waited forever; the process
    kept its lease and never led again (found by make chaos)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_s)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: ended with an error while stopping is no news
