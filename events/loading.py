"""Reading the log into a state: the newest checkpoint plus every event after it,
folded (read through the event archive where etcd no longer holds them), or the
state as it was at a past revision; and the state kept current as the log grows.

Must not import the reactors or the orchestrator, so a short-lived CLI process does
not pay for SSH or the reactor engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from events.lifecycle.checkpoints import load_checkpoint, usable_manifests
from events.model import Event
from events.projection import fold
from events.state import ClusterState
from events.store import EventStore

BATCH = 5000


class Subscribable(Protocol):
    def subscribe(self, from_revision: int) -> AsyncIterator[tuple[int, Event]]: ...


async def load_state(
    store: EventStore,
    *,
    at: int | None = None,
    on_checkpoint: Callable[[ClusterState], Awaitable[None]] | None = None,
) -> ClusterState:
    """The cluster folded up to revision `at` (None: everything): the newest
    checkpoint at or below it that validates (in etcd, else in the archive),
    then the events after it. `on_checkpoint` is given the checkpoint's own
    state first (to start views kept from one state to the next from it).

    The events after the newest checkpoint in etcd are read while that
    checkpoint is read and decoded (`_Tail`); they are used only once it has
    validated, and when an older one is used instead, the events between the two
    are read first (`_after`)."""
    candidates = await usable_manifests(store, at_most=at)
    tail = _Tail(store, after=candidates[-1].revision, at=at) if candidates else None
    try:
        checkpoint = await load_checkpoint(store, at_most=at, candidates=candidates)
        if checkpoint is not None and on_checkpoint is not None:
            await on_checkpoint(checkpoint)
        state = checkpoint or ClusterState()
        batch = []
        async for revision, event in _after(store, state, tail, at=at):
            batch.append((revision, event))
            if len(batch) >= BATCH:
                state = fold(state, batch)
                batch.clear()
        return fold(state, batch) if batch else state
    finally:
        if tail is not None:
            tail.stop()


async def _after(
    store: EventStore, state: ClusterState, tail: _Tail | None, *, at: int | None
) -> AsyncIterator[tuple[int, Event]]:
    """Every event after `state` (up to `at`): from `tail` where it starts right
    after what `state` holds, else read now."""
    # From the checkpoint's own revision: it may hold only part of that append
    # (the fold skips the events it already has).
    start = state.revision
    ahead = tail if tail is not None and start <= tail.after else None
    if ahead is not None and start == ahead.after:
        whole = bool(start) and await ahead.ids() <= state.revision_ids
    else:
        whole = bool(start) and await store.ids_at(start) <= state.revision_ids
    if whole:
        start += 1  # the checkpoint holds that whole append
    upto = at if ahead is None else ahead.after
    if upto is None or start <= upto:
        async for revision, event in store.read_all(from_revision=start, known=state.revision_ids):
            if upto is not None and revision > upto:
                break
            yield revision, event
    if ahead is not None:
        async for item in ahead.events():
            yield item


class _Tail:
    """The log after revision `after` (up to `at`), read in the background from
    the moment it is made: the ids of the events of `after` itself, and the
    events after it, a bounded queue of them at a time."""

    def __init__(self, store: EventStore, *, after: int, at: int | None) -> None:
        self.after = after
        self._queue: asyncio.Queue[tuple[int, Event] | BaseException | None] = asyncio.Queue(
            maxsize=BATCH
        )
        self._ids = asyncio.ensure_future(store.ids_at(after))
        self._pump = asyncio.ensure_future(self._read(store, at))

    async def _read(self, store: EventStore, at: int | None) -> None:
        try:
            async for revision, event in store.read_all(from_revision=self.after + 1):
                if at is not None and revision > at:
                    break
                await self._queue.put((revision, event))
        except Exception as exc:  # raised where the events are taken
            await self._queue.put(exc)
            return
        await self._queue.put(None)

    async def ids(self) -> frozenset[str]:
        return await self._ids

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        while (item := await self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        """Stop reading; a failure nobody took is dropped with the read."""
        for task in (self._ids, self._pump):
            task.cancel()
            if task.done() and not task.cancelled():
                task.exception()


FOLD_BATCH = 5000  # events folded at once at most, so that listeners hear of them soon


async def follow_batches(
    log: Subscribable, state: ClusterState, *, stale: asyncio.Event | None = None
) -> AsyncIterator[tuple[list[Event], ClusterState]]:
    """Every event after `state`, forever, in batches of those that arrived
    together, with the state folded up to the batch (one fold of a batch costs
    little more than one of a single event; at thousands of instances a fold per
    event was most of the reactors' time). Events of one append share a revision,
    so the fold (not a revision compare) decides what is new: events it has
    already folded are left out. A checkpoint may hold only part of its last
    append, so the subscription starts at that revision itself.

    `stale`, when set by the caller (its own acknowledged write has not arrived),
    drops the subscription and subscribes again from the folded state: a watch
    can go silent without an error (make chaos: after etcd faults one of two
    subscriptions on one client stopped, and with it an orchestrator's fold)."""
    queue: asyncio.Queue[tuple[int, Event] | BaseException] = asyncio.Queue()

    async def pump(since: int) -> None:
        try:
            async for item in log.subscribe(max(since, 1)):
                queue.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            queue.put_nowait(exc)

    task = asyncio.create_task(pump(state.revision), name="corral-subscription")
    try:
        while True:
            first = await _next_or_stale(queue, stale)
            if first is None:
                assert stale is not None
                stale.clear()
                task.cancel()
                while not queue.empty():
                    queue.get_nowait()
                task = asyncio.create_task(pump(state.revision), name="corral-subscription")
                continue
            batch = [first]
            while not queue.empty() and len(batch) < FOLD_BATCH:
                batch.append(queue.get_nowait())
            items = [item for item in batch if not isinstance(item, BaseException)]
            new = [
                event
                for revision, event in items
                if revision > state.revision
                or (revision == state.revision and event.id not in state.revision_ids)
            ]
            before = state
            state = fold(before, items) if items else before
            if new and state.event_count != before.event_count:
                yield new, state
            failed = [item for item in batch if isinstance(item, BaseException)]
            if failed:
                raise failed[0]
    finally:
        task.cancel()


async def _next_or_stale(
    queue: asyncio.Queue[tuple[int, Event] | BaseException], stale: asyncio.Event | None
) -> tuple[int, Event] | BaseException | None:
    """The next item, or None once `stale` is set."""
    if stale is None:
        return await queue.get()
    get = asyncio.ensure_future(queue.get())
    flag = asyncio.ensure_future(stale.wait())
    try:
        await asyncio.wait({get, flag}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        flag.cancel()
        if not get.done():
            get.cancel()
    return get.result() if get.done() and not get.cancelled() else None


async def follow(
    log: Subscribable, state: ClusterState
) -> AsyncIterator[tuple[Event, ClusterState]]:
    """Every event after `state`, forever, each with the state folded at least up
    to it (up to the batch it arrived in)."""
    async for events, folded in follow_batches(log, state):
        for event in events:
            yield event, folded
