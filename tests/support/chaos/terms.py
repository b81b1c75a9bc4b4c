"""Control-plane invariants read from etcd itself: which orchestrator held the
leader key over which revisions (the key's whole history, from a watch that
starts at revision 1), and whether any reactor event was committed by an
orchestrator outside its own terms."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from events.store import EventStore


@dataclass(frozen=True)
class Term:
    member: str
    start: int  # the leader key's create revision: the term
    end: int | None  # the revision that deleted it (None: still held)

    def holds(self, revision: int) -> bool:
        return self.start <= revision and (self.end is None or revision < self.end)


async def term_history(store: EventStore) -> list[Term]:
    """Every term so far, oldest first (needs the history uncompacted)."""
    now = await store.current_revision()
    # The key held now was last written at its mod revision: the history is
    # whole once that is seen. Without a holder, the last change (a delete) is
    # somewhere before `now`, and a pause in the replay ends it.
    # Through the store's call wrapper: a channel closed under the call (the store
    # moving members) is EtcdUnavailable, which the checks read again, not a
    # CancelledError that ended a whole `make chaos` run (seed 479).
    held: Any = await store._call(store.client.get(store.leader_key))
    last_change = int(held.mod_revision) if held is not None else now
    watch = await store._call(store.client.watch(store.leader_key, start_revision=1))
    events = watch.__aiter__()
    terms: list[Term] = []
    try:
        while True:
            try:
                event: Any = await asyncio.wait_for(
                    events.__anext__(), 10.0 if held is not None else 2.0
                )
            except (TimeoutError, StopAsyncIteration):
                if held is not None:
                    # A watch on a member still catching up, or on a client the
                    # store has just left: the caller reads again.
                    raise TimeoutError("the leader key's history did not replay") from None
                break
            kv = event.kv
            if event.kind == "PUT" and kv.create_revision == kv.mod_revision:
                member = str(json.loads(bytes(kv.value))["id"])
                terms.append(Term(member=member, start=int(kv.create_revision), end=None))
            elif event.kind == "DELETE" and terms and terms[-1].end is None:
                last = terms[-1]
                terms[-1] = Term(member=last.member, start=last.start, end=int(kv.mod_revision))
            if int(kv.mod_revision) >= min(last_change, now):
                break
    finally:
        with contextlib.suppress(Exception):
            await watch.cancel()
    return terms


async def deposed_writes(store: EventStore) -> list[str]:
    """Reactor events (actor `reactor@<member>`) committed at a revision where
    their orchestrator did not hold the leader key: what the term guard forbids.
    Events newer than the history read are left for the next call (make chaos
    seed 200: a term begun between the two reads made its first events look
    deposed)."""
    horizon = await store.current_revision()  # the history read next covers it
    terms = await term_history(store)
    bad = []
    async for revision, event in store.read_all():
        if revision > horizon:
            break  # a term begun since may not be in the history read
        actor = event.actor
        if not actor.startswith("reactor@"):
            continue
        member = actor.partition("@")[2]
        if not any(t.member == member and t.holds(revision) for t in terms):
            bad.append(f"{event.TYPE} {event.id} by {member} at revision {revision}")
    return bad
