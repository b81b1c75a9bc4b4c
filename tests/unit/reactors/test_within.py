"""A call the leadership loop stops waiting for (its time is up, or the loop itself
is cancelled as a term ends) is cancelled and its error read, so that asyncio
never reports it as "Task exception was never retrieved" (chaos runs did)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from reactors.leader import _within


async def _fails_when_left() -> None:
    try:
        await asyncio.sleep(0.05)
    finally:
        raise RuntimeError("the channel went away")  # as gRPC's cancelled call does


async def _reports_after(step: Any) -> list[str]:
    loop = asyncio.get_running_loop()
    reports: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: reports.append(str(ctx.get("message"))))
    try:
        await step()
        await asyncio.sleep(0.2)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    return reports


async def test_a_caller_cancelled_meanwhile_leaves_nothing_unretrieved() -> None:
    async def cancelled_caller() -> None:
        waiting = asyncio.create_task(_within(_fails_when_left(), 10.0))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    assert await _reports_after(cancelled_caller) == []


async def test_a_call_past_its_time_is_cancelled_and_read() -> None:
    async def timed_out() -> None:
        with pytest.raises(TimeoutError):
            await _within(_fails_when_left(), 0.01)

    assert await _reports_after(timed_out) == []


async def test_a_call_in_time_gives_its_result() -> None:
    async def quick() -> int:
        return 7

    assert await _within(quick(), 1.0) == 7
