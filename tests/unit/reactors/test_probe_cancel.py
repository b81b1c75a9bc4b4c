"""A probe cancelled at a term's end leaves nothing running behind it: with
`asyncio.wait_for`, the node probe ran in a task of its own, and a probe cancelled
twice (`cancel_all` cancels again every half second; a term's end cancels a
worker's pass and its gather) gave up waiting for that task, which ran on, failed
later and was logged as "Task exception was never retrieved" (from TermNodes.probe,
after crashes in make chaos). The deadline now runs in the probing task itself.
And a probe whose cancellation came back as a failure (Python 3.11's wait_for in
the SSH command, a connect refused in the same turn) ends cancelled too, rather
than returning as if its node had simply not answered."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, NoReturn

from events.ids import NodeName
from events.state import ClusterState
from reactors.context import ReactorContext, ReactorSettings
from reactors.prober import Prober
from reactors.seams import NodeUnreachable
from tests.support.cluster.no_nodes import NoNodes


class SlowToStop(NoNodes):
    """A probe whose SSH channel takes a moment to close when cancelled, and then
    fails (as a connection torn down under it does)."""

    def __init__(self) -> None:
        self.still_running = 0

    async def probe(self, node: NodeName) -> NoReturn:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.still_running += 1
            try:
                await asyncio.sleep(0.2)
            finally:
                self.still_running -= 1
        raise NodeUnreachable(node)


async def test_a_probe_cancelled_twice_leaves_no_task_behind() -> None:
    nodes = SlowToStop()
    ctx = ReactorContext(
        log_store=None,  # type: ignore[arg-type]  # nothing is appended: the probe fails
        nodes=nodes,
        settings=ReactorSettings(probe_timeout_s=30),
        state=ClusterState(),
    )
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    try:
        task = asyncio.create_task(Prober(ctx=ctx).probe(NodeName("node1")))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0)  # the term's end cancels again, at once
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert nodes.still_running == 0, "the node probe still runs after its prober ended"
        await asyncio.sleep(0.4)
        gc.collect()
        assert not unretrieved, unretrieved
    finally:
        loop.set_exception_handler(None)


class FailsWhenCancelled(NoNodes):
    """A probe that, cancelled, fails instead (the connect refused in that turn)."""

    async def probe(self, node: NodeName) -> NoReturn:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise NodeUnreachable(f"{node}: ConnectionRefusedError") from None
        raise AssertionError("not cancelled")


async def test_a_probe_whose_cancellation_came_back_as_a_failure_ends_cancelled() -> None:
    ctx = ReactorContext(
        log_store=None,  # type: ignore[arg-type]  # nothing is appended: the probe fails
        nodes=FailsWhenCancelled(),
        settings=ReactorSettings(probe_timeout_s=30),
        state=ClusterState(),
    )
    task = asyncio.create_task(Prober(ctx=ctx).probe(NodeName("node1")))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled(), "the probe went on after its term's end cancelled it"
