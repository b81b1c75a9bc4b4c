"""A term's reactors are stopped even when one of them loses its cancellation:
on Python 3.11 `asyncio.wait_for` raises its inner exception instead of the
cancellation when both arrive in the same turn (an SSH connect refused just as
the term ends), and a loop that catches Exception then runs on. `cancel_all`
cancels again until the task ends; a single cancel, as before, waited forever
(make chaos: the old leader never campaigned again and nobody led)."""

from __future__ import annotations

import asyncio
import sys

from reactors.ending import cancel_all


async def probe_loop(waiting: list[asyncio.Future[None]]) -> None:
    """Like the prober's loop: one failed probe must not end it."""
    loop = asyncio.get_running_loop()
    while True:
        fut: asyncio.Future[None] = loop.create_future()
        waiting.append(fut)
        try:
            await asyncio.wait_for(fut, 10)
        except asyncio.CancelledError:
            raise
        except Exception:  # the probe failed: probe again
            pass
        await asyncio.sleep(0.01)


async def a_loop_that_lost_a_cancel() -> asyncio.Task[None]:
    waiting: list[asyncio.Future[None]] = []
    task = asyncio.create_task(probe_loop(waiting))
    await asyncio.sleep(0.05)
    waiting[-1].set_exception(ConnectionRefusedError())  # the same turn...
    task.cancel()  # ...as the cancellation
    return task


async def test_a_single_cancel_can_be_lost_on_311() -> None:
    task = await a_loop_that_lost_a_cancel()
    await asyncio.sleep(0.3)
    if sys.version_info < (3, 12):
        assert not task.done(), "the race this guards against did not happen"
    await cancel_all([task])


async def test_cancel_all_ends_it() -> None:
    task = await a_loop_that_lost_a_cancel()
    await asyncio.wait_for(cancel_all([task], again_s=0.1), 5)
    assert task.cancelled()
