"""Start-up reading of the log: the latest snapshot plus every event after it, folded.

Must not import the reactors or the orchestrator, so a short-lived CLI process does
not pay for SSH or the reactor engine.
"""

from __future__ import annotations

from events.projection import fold
from events.state import ClusterState
from events.store import EventStore

BATCH = 5000


async def load_state(store: EventStore) -> ClusterState:
    """Snapshot plus the events after it."""
    state = await store.load_snapshot() or ClusterState()
    batch = []
    async for revision, event in store.read_all(from_revision=state.revision + 1):
        batch.append((revision, event))
        if len(batch) >= BATCH:
            state = fold(state, batch)
            batch.clear()
    return fold(state, batch) if batch else state
