"""The event log as a subscription: every event from a revision on, forever,
exactly once and in order: a catch-up read of the log (`read_all`, paged through
the order index), then a watch of the events' keys from where the read ended;
across etcd restarts, a member's loss and compaction.

A mixin of `events.store.EventStore`: must not write to etcd. A watch is not used
to catch up on a long gap: etcd 3.4 re-reads a lagging watcher's revisions from
its start every 100 ms (`syncWatchers`), which is quadratic in the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aetcd.exceptions as etcd_errors

from events.etcdlog.store_errors import RETRYABLE, EtcdUnavailable, prefix_end
from events.etcdlog.store_members import close_within
from events.model import Event

if TYPE_CHECKING:
    import aetcd


def _log() -> Any:
    import structlog

    return structlog.get_logger("corral.store")


class LogSubscription:
    """The subscription side of the event store."""

    if TYPE_CHECKING:
        client: aetcd.Client
        timeout: float

        @property
        def events_prefix(self) -> bytes: ...

        def read_all(
            self, *, from_revision: int = 0, known: frozenset[str] = frozenset()
        ) -> AsyncIterator[tuple[int, Event]]: ...

        def _decode_group(self, kvs: list[object]) -> list[tuple[int, Event]]: ...

        async def move_to_healthy_member(self) -> bool: ...

    # ------------------------------------------------------------------ subscribe

    async def subscribe(self, from_revision: int) -> AsyncIterator[tuple[int, Event]]:
        """Every event from `from_revision` on, forever, exactly once and in order,
        across etcd restarts (reconnect with backoff, re-watch from the last
        delivered revision) and compaction (a range read, then a fresh watch)."""
        next_rev = max(from_revision, 1)
        seen_at: tuple[int, set[str]] = (0, set())
        backoff = 0.1
        while True:
            try:
                # Catch up by range read first: handles compacted revisions and a
                # long gap after a disconnect the same way.
                async for revision, event in self.read_all(from_revision=next_rev):
                    if revision == seen_at[0] and event.id in seen_at[1]:
                        continue
                    if revision != seen_at[0]:
                        seen_at = (revision, set())
                    seen_at[1].add(event.id)
                    next_rev = revision
                    yield revision, event
                watch_from = max(next_rev, seen_at[0]) if seen_at[0] else next_rev
                watch = await self.client.watch(
                    self.events_prefix,
                    range_end=prefix_end(self.events_prefix),
                    start_revision=watch_from,
                )
                backoff = 0.1
                try:
                    async for response in watch:
                        for kv_event in self._watch_events(response):
                            revision, event = kv_event
                            if revision < seen_at[0] or (
                                revision == seen_at[0] and event.id in seen_at[1]
                            ):
                                continue
                            if revision != seen_at[0]:
                                seen_at = (revision, set())
                            seen_at[1].add(event.id)
                            next_rev = revision
                            yield revision, event
                finally:
                    with contextlib.suppress(Exception):
                        await watch.cancel()
            except etcd_errors.RevisionCompactedError:
                _log().info(
                    "watch revision compacted; catching up by range read", revision=next_rev
                )
                continue
            except (EtcdUnavailable, *RETRYABLE, etcd_errors.ClientError, OSError) as exc:
                _log().warning("event subscription interrupted; resuming", error=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if not await self.move_to_healthy_member():
                    await close_within(self.client, self.timeout)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self.client.connect(), self.timeout)
                continue

    def _watch_events(self, watch_event: object) -> list[tuple[int, Event]]:
        """aetcd yields one key change at a time, in the order of the append."""
        kv = getattr(watch_event, "kv", None)
        if kv is None or getattr(watch_event, "kind", "") != "PUT":
            return []
        if kv.create_revision != kv.mod_revision:
            return []  # event keys are write-once; anything else is not an append
        return self._decode_group([kv])
