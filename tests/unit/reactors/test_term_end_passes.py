"""A term's end waits for the reconcile passes it started. A pass can lose its
cancellation (Python 3.11's `asyncio.wait_for`, see test_cancel_all) and run on;
before, the workers' loop only cancelled its passes and returned, so the next
term could start a pass on the same instance beside the old one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace
from typing import cast

import pytest

from events.ids import InstanceName
from reactors import workers as workers_module
from reactors.context import ReactorContext
from reactors.ending import cancel_all
from reactors.prober import Prober
from reactors.workers import InstanceWorkers


def workers() -> InstanceWorkers:
    ctx = SimpleNamespace(
        stopping=False,
        settings=SimpleNamespace(max_parallel_instances=4, resync_interval_s=60.0),
        now=time.time,
    )
    return InstanceWorkers(ctx=cast(ReactorContext, ctx), prober=cast(Prober, None))


async def test_a_term_end_waits_for_a_pass_that_lost_its_cancellation() -> None:
    w = workers()
    started = asyncio.Event()
    ended: list[str] = []

    async def stubborn(name: InstanceName) -> None:
        started.set()
        # Every cancellation lost for 1.2 s (longer than cancel_all's half-second
        # rounds), as a wait_for on a refused connect can lose each one.
        until = time.monotonic() + 1.2
        while time.monotonic() < until:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(until - time.monotonic())
        ended.append(name)

    w.reconcile_once = stubborn  # type: ignore[method-assign]
    run = asyncio.create_task(w.run())
    w.mark(InstanceName("vm1"))
    await asyncio.wait_for(started.wait(), 5)
    await cancel_all([run])  # what TermReactors.stop does
    assert ended == ["vm1"]
    assert not w._running


async def test_a_pass_that_ends_when_cancelled_ends_at_once() -> None:
    w = workers()
    started = asyncio.Event()

    async def obedient(name: InstanceName) -> None:
        started.set()
        await asyncio.sleep(30)

    w.reconcile_once = obedient  # type: ignore[method-assign]
    run = asyncio.create_task(w.run())
    w.mark(InstanceName("vm1"))
    await asyncio.wait_for(started.wait(), 5)
    began = time.monotonic()
    await cancel_all([run])
    assert time.monotonic() - began < 0.5
    assert not w._running


async def test_a_pass_that_never_ends_holds_the_term_end_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workers_module, "PASSES_END_WITHIN_S", 0.6)
    w = workers()
    started = asyncio.Event()

    async def deaf(name: InstanceName) -> None:
        started.set()
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(until - time.monotonic())

    w.reconcile_once = deaf  # type: ignore[method-assign]
    run = asyncio.create_task(w.run())
    w.mark(InstanceName("vm1"))
    await asyncio.wait_for(started.wait(), 5)
    began = time.monotonic()
    await cancel_all([run])
    assert 0.5 < time.monotonic() - began < 2.0
    assert list(w._running) == ["vm1"]  # still running, and logged as such
    await asyncio.sleep(2.6)  # it ends by itself; nothing is left unretrieved
    assert not w._running
