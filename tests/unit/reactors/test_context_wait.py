"""The reactors' wait for the fold (`ReactorContext.wait_revision`) given up while
the fold holds the lock (its deadline passed, then its task cancelled, as at a
term's end): the lock is free afterwards, so the fold and every other waiter go
on. With the deadline in a task of its own (asyncio.wait_for) the abandoned task
took the lock later and kept it: the fold stopped for good (a 400-instance heal
bench stalled so, under load)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from events.state import ClusterState
from reactors.context import ReactorContext, ReactorSettings


async def _fold(ctx: ReactorContext) -> None:
    async with ctx._changed:  # the fold's notify, held across the deadline
        await asyncio.sleep(0.1)


async def test_a_waiter_given_up_while_the_fold_holds_the_lock_leaves_it_free() -> None:
    for step in range(11):
        ctx = ReactorContext(
            log_store=cast(Any, None),
            nodes=cast(Any, None),
            settings=ReactorSettings(),
            state=ClusterState(),
        )
        waiter = asyncio.create_task(ctx.wait_revision(10**9, timeout=0.05))
        await asyncio.sleep(0.01)

        holder = asyncio.create_task(_fold(ctx))
        await asyncio.sleep(0.07 + step * 0.003)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await waiter
        await holder
        # Free again: another waiter gets it (and times out normally).
        await asyncio.wait_for(ctx.wait_change(timeout=0.01), 1.0)
        assert not ctx._changed.locked()
