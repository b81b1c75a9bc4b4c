"""Reading the log into a state: the latest snapshot plus every event after it, folded,
or the state as it was at a past revision; and the state kept current as the log grows.

Must not import the reactors or the orchestrator, so a short-lived CLI process does
not pay for SSH or the reactor engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from events.model import Event
from events.projection import fold
from events.state import ClusterState
from events.store import EventStore

BATCH = 5000


class Subscribable(Protocol):
    def subscribe(self, from_revision: int) -> AsyncIterator[tuple[int, Event]]: ...


async def load_state(store: EventStore, *, at: int | None = None) -> ClusterState:
    """The latest snapshot plus the events after it; with `at`, the cluster as it was
    at revision `at`, folded from the first event."""
    snapshot = await store.load_snapshot() if at is None else None
    state = snapshot or ClusterState()
    batch = []
    async for revision, event in store.read_all(from_revision=state.revision + 1):
        if at is not None and revision > at:
            break
        batch.append((revision, event))
        if len(batch) >= BATCH:
            state = fold(state, batch)
            batch.clear()
    return fold(state, batch) if batch else state


async def follow(
    log: Subscribable, state: ClusterState
) -> AsyncIterator[tuple[Event, ClusterState]]:
    """Every event after `state`, forever, with the state folded up to it. Events of
    one append share a revision, so the fold (not a revision compare) decides what is
    new: an event it has already folded is skipped."""
    async for revision, event in log.subscribe(state.revision + 1):
        before = state
        state = fold(before, [(revision, event)])
        if state is before or state.event_count == before.event_count:
            continue
        yield event, state
