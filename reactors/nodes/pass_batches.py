"""One round trip per node per reconcile pass: the helper requests of every step
bound for one node in the same turn of the event loop (the steps of every
instance reconciled at once, which start together once their StepStarted
events share one etcd transaction) go out as one `batch` of the node helper,
one group per step. Within a group the requests keep their order and stop at a
failure; groups are independent, so one step's failure never skips another's.
A batch the node refuses whole as invalid is sent again one step at a time, so
that only the step at fault fails.

Sends nothing itself (the sender is given); decides nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from events.ids import NodeName
from reactors.nodes.commands import BatchResult, HelperRequest

Groups = Sequence[tuple[str, Sequence[HelperRequest]]]
_Waiting = tuple[list[HelperRequest], "asyncio.Future[list[BatchResult]]"]


@dataclass
class PassBatcher:
    # One batch of groups in one round trip (several requests or several steps).
    send_batch: Callable[[NodeName, Groups], Awaitable[list[list[BatchResult]]]]
    # One request alone, as its own verb (a step of one request, alone this turn).
    send_one: Callable[[NodeName, HelperRequest], Awaitable[BatchResult]]
    # An exception the node raised for a batch refused whole as invalid: the
    # batch is split into its steps and each sent alone.
    split_on: Callable[[BaseException], bool]
    # Steps per batch at most: more wait for the next batch on another channel
    # of the node's connection (the helper runs one batch's requests in order).
    max_steps: int = 64
    batches_sent: int = 0
    steps_sent: int = 0
    _pending: dict[NodeName, list[_Waiting]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def submit(self, node: NodeName, requests: Sequence[HelperRequest]) -> list[BatchResult]:
        """The results of one step's requests, in order (rc None: skipped after
        the group's failure), sent with whatever else goes to `node` this turn."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[BatchResult]] = loop.create_future()
        queue = self._pending.setdefault(node, [])
        queue.append((list(requests), waiter))
        if len(queue) == 1:
            loop.call_soon(self._flush, node)
        return await waiter

    def _flush(self, node: NodeName) -> None:
        # A step whose pass was cancelled before the flush is not sent.
        queue = [w for w in self._pending.pop(node, []) if not w[1].done()]
        for start in range(0, len(queue), self.max_steps):
            task = asyncio.get_running_loop().create_task(
                self._send(node, queue[start : start + self.max_steps])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, node: NodeName, chunk: list[_Waiting]) -> None:
        try:
            results = await self._round_trip(node, chunk)
        except BaseException as exc:
            if len(chunk) > 1 and isinstance(exc, Exception) and self.split_on(exc):
                for one in chunk:
                    await self._send(node, [one])
                return
            for _, waiter in chunk:
                if not waiter.done():
                    waiter.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, waiter), result in zip(chunk, results, strict=True):
            if not waiter.done():
                waiter.set_result(result)

    async def _round_trip(self, node: NodeName, chunk: list[_Waiting]) -> list[list[BatchResult]]:
        self.batches_sent += 1
        self.steps_sent += len(chunk)
        if len(chunk) == 1 and len(chunk[0][0]) == 1:
            return [[await self.send_one(node, chunk[0][0][0])]]
        return await self.send_batch(
            node, [(f"step{n}", requests) for n, (requests, _) in enumerate(chunk)]
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
