"""Moving an event store to another etcd member: when the member in use fails a
request, the store looks (in the background, one search at a time, at most one a
second) for another member that answers and sees a Raft leader, and switches its
connection there; the old connection is closed aside under a deadline.

A mixin of `events.store.EventStore` (its connection and members): must not read
or write the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import aetcd.exceptions as etcd_errors

from events.etcd_client import Endpoint, EtcdCredentials, make_client

if TYPE_CHECKING:
    import aetcd


def _log() -> Any:
    import structlog

    return structlog.get_logger("corral.store")


async def close_within(client: aetcd.Client, seconds: float) -> None:
    """Close `client`, giving up after `seconds` (a hung close is abandoned)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), seconds)


class MemberMoves:
    """Switching the store's connection to a healthy member."""

    if TYPE_CHECKING:
        client: aetcd.Client
        endpoint: str
        members: tuple[Endpoint, ...]
        credentials: EtcdCredentials | None
        timeout: float
        _moving: asyncio.Task[bool] | None
        _moved_at: float
        _closing: set[asyncio.Task[None]]

    # ------------------------------------------------------------------ members

    def trouble(self) -> None:
        """The member in use failed a request: look for a better one in the
        background (one search at a time, at most one a second)."""
        if self._may_move():
            self._moving = asyncio.get_running_loop().create_task(self._move())

    def _may_move(self) -> bool:
        if len(self.members) < 2 or (self._moving is not None and not self._moving.done()):
            return False
        if time.monotonic() - self._moved_at < 1.0:
            return False
        self._moved_at = time.monotonic()
        return True

    async def move_to_healthy_member(self) -> bool:
        """Switch to the first other member that answers and sees a Raft leader
        (or wait for the search under way); True if the store moved. The old
        channel is closed: its calls fail, and their callers retry."""
        if self._moving is not None and not self._moving.done():
            return await asyncio.shield(self._moving)
        if not self._may_move():
            return False
        self._moving = asyncio.get_running_loop().create_task(self._move())
        return await asyncio.shield(self._moving)

    async def _move(self) -> bool:
        current = next((i for i, m in enumerate(self.members) if m.url == self.endpoint), 0)
        order = self.members[current + 1 :] + self.members[: current + 1]
        wait = min(self.timeout, 2.0)
        for member in order:
            if member.url == self.endpoint:
                continue
            client = make_client(member, self.credentials, timeout=self.timeout)
            try:
                await asyncio.wait_for(client.connect(), wait)
                status = await asyncio.wait_for(client.status(), wait)
                if not getattr(status, "leader", None):
                    raise etcd_errors.ClientError("no leader")
            except (TimeoutError, etcd_errors.ClientError, OSError):
                with contextlib.suppress(Exception):
                    await client.close()
                continue
            old, self.client, self.endpoint = self.client, client, member.url
            _log().warning("etcd member changed", now=member.url)
            # Closed aside, under a deadline: closing a client whose member hangs
            # can wait forever inside aetcd (its watcher's full request queue),
            # and every writer and subscriber waits for this move to end.
            closing = asyncio.get_running_loop().create_task(close_within(old, self.timeout))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            return True
        return False
