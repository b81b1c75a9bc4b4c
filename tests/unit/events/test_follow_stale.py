"""A subscription that goes silent without an error is made again when the
caller says its fold is stale (its own acknowledged write has not arrived): the
fold then goes on from what it has, nothing folded twice. The log here is an
in-memory one whose first subscription stops after one event, as a watch on etcd
did in make chaos seed 0 (the leader's fold stuck, its probes waiting on it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from events.loading import follow_batches
from events.model import Event
from events.state import ClusterState
from tests.support.cluster.events import ev


class GoesSilent:
    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.subscriptions: list[int] = []

    async def subscribe(self, from_revision: int) -> AsyncIterator[tuple[int, Event]]:
        self.subscriptions.append(from_revision)
        for revision, event in enumerate(self.events, start=1):
            if revision < from_revision:
                continue
            if len(self.subscriptions) == 1 and revision > 1:
                await asyncio.Event().wait()  # silent, no error
            yield revision, event
            await asyncio.sleep(0)


async def test_a_silent_subscription_is_made_again_when_stale() -> None:
    log = GoesSilent([ev(1), ev(2), ev(3)])
    stale = asyncio.Event()
    seen: list[int] = []

    async def follow() -> None:
        async for _, state in follow_batches(log, ClusterState(), stale=stale):
            seen.append(state.revision)

    task = asyncio.create_task(follow())
    try:
        await asyncio.sleep(0.2)
        assert seen == [1]  # the first subscription went silent after one event
        stale.set()
        for _ in range(50):
            if seen[-1] == 3:
                break
            await asyncio.sleep(0.02)
        assert seen[-1] == 3
        assert log.subscriptions == [1, 1]  # again from the folded revision
    finally:
        task.cancel()
