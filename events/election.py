"""The leader key in etcd: one lease per orchestrator process, the members'
registrations under that lease, and the campaign for the leader key, whose create
revision is the leader's term (strictly increasing across leaders, so it is a
fencing token: `EventStore.append(term=...)` compares it).

Keys, under `/corral/<cluster>/`:
- `leader`: created only if absent, under the campaigner's lease; value JSON
  (member id, host, pid, API address, since). Gone when the lease ends.
- `members/<id>`: every running orchestrator, under its lease; value JSON as above.

etcd mechanics only: when to campaign, step down or stop acting is decided by
`reactors.leader`. An etcd lease is not a fence (safety rule 6): the term guards
writes inside etcd and commands on nodes; nothing here touches a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import aetcd.exceptions as etcd_errors

from events.store import EventStore

WATCH_ERRORS = (etcd_errors.ClientError, OSError, TimeoutError)


class LeaseLost(Exception):
    """The lease ended (expired or revoked) or could not be refreshed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """One orchestrator process."""

    id: str
    host: str
    pid: int
    api: str = ""  # the native API's address, for `corral cluster leader`
    started: float = 0.0

    @classmethod
    def here(cls, *, api: str = "", name: str = "") -> Member:
        host = socket.gethostname()
        return cls(
            id=name or f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            host=host,
            pid=os.getpid(),
            api=api,
            started=time.time(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderRecord:
    member: Member
    term: int  # the leader key's create revision
    since: float  # wall time the term began


def _member(raw: bytes) -> Member:
    doc: dict[str, Any] = json.loads(raw)
    return Member(
        id=str(doc["id"]),
        host=str(doc.get("host", "")),
        pid=int(doc.get("pid", 0)),
        api=str(doc.get("api", "")),
        started=float(doc.get("started", 0.0)),
    )


@dataclass
class Election:
    store: EventStore
    member: Member
    ttl_s: int = 5
    lease_id: int = 0

    @property
    def members_prefix(self) -> bytes:
        return self.store.root + b"members/"

    def _value(self, **extra: object) -> bytes:
        return json.dumps({**asdict(self.member), **extra}, sort_keys=True).encode()

    async def register(self) -> None:
        """A fresh lease, and this member's key under it. `lease_id` is set only
        once both are done: a registration cut short after the grant (a timeout, a
        refused put) leaves no half-registered lease that is kept alive while
        nothing campaigns under it (the granted lease simply expires)."""
        lease = await self.store._call(self.store.client.lease(self.ttl_s), operation="lease")
        lease_id = int(lease.id)
        await self.store._call(
            self.store.client.put(
                self.members_prefix + self.member.id.encode(), self._value(), lease=lease_id
            ),
            operation="lease",
        )
        self.lease_id = lease_id

    async def refresh(self) -> float:
        """Keep the lease alive; the TTL it has left. LeaseLost if it ended."""
        reply: Any = await self.store._call(
            self.store.client.refresh_lease(self.lease_id), operation="lease"
        )
        ttl = int(getattr(reply, "TTL", 0)) if reply is not None else 0
        if ttl <= 0:
            raise LeaseLost(f"lease {self.lease_id:x} ended")
        return float(ttl)

    async def release(self) -> None:
        """Revoke the lease: the member key and any leader key it holds go at once."""
        if self.lease_id:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.client.revoke_lease(self.lease_id), 2.0)
            self.lease_id = 0

    async def campaign(self) -> int | None:
        """Create the leader key under our lease if nobody holds it: our term, or
        None while someone else leads."""
        lease_id = self.lease_id
        if not lease_id:  # never a leader key without a lease: it would never go
            raise LeaseLost("no lease to campaign under (registering again)")
        tx = self.store.client.transactions
        key = self.store.leader_key
        await self.store._call(
            self.store.client.transaction(
                compare=[tx.create(key) == 0],
                success=[tx.put(key, self._value(since=time.time()), lease=lease_id)],
                failure=[],
            ),
            operation="campaign",
        )
        got: Any = await self.store._call(self.store.client.get(key), operation="campaign")
        if got is not None and int(got.lease) == lease_id == self.lease_id:
            return int(got.create_revision)
        return None

    async def resign(self, term: int) -> None:
        """Give the leader key up if it is still ours (term unchanged)."""
        tx = self.store.client.transactions
        key = self.store.leader_key
        await self.store._call(
            self.store.client.transaction(
                compare=[tx.create(key) == term], success=[tx.delete(key)], failure=[]
            ),
            operation="campaign",
        )

    async def vacant(self) -> bool:
        """Nobody holds the leader key right now."""
        got: Any = await self.store._call(
            self.store.client.get(self.store.leader_key), operation="campaign"
        )
        return got is None

    async def wait_vacant(self, *, timeout: float) -> None:
        """Return once the leader key is gone (or changed), or after `timeout`."""
        key = self.store.leader_key
        got: Any = await self.store._call(self.store.client.get(key), operation="campaign")
        if got is None:
            return
        # The whole watch under one deadline: setting it up can hang as long as
        # etcd has no quorum. A client closed under the watch (the store moving to
        # another member) makes aetcd's watch_once fail with AttributeError (its
        # watcher is gone when it cancels): the campaign goes on, on the new client.
        with contextlib.suppress(etcd_errors.WatchTimeoutError, AttributeError, *WATCH_ERRORS):
            await asyncio.wait_for(
                self.store.client.watch_once(
                    key, timeout=timeout, start_revision=int(got.header.revision) + 1
                ),
                timeout + 1.0,
            )


async def read_leadership(store: EventStore) -> tuple[LeaderRecord | None, list[Member]]:
    """The leader (if any) and every registered orchestrator, leader included."""
    root = store.root
    got: Any = await store._call(store.client.get(store.leader_key))
    leader = None
    if got is not None:
        doc = json.loads(bytes(got.value))
        leader = LeaderRecord(
            member=_member(bytes(got.value)),
            term=int(got.create_revision),
            since=float(doc.get("since", 0.0)),
        )
    members: list[Member] = []
    response: Any = await store._call(
        store.client.get_prefix(root + b"members/", sort_target="key")
    )
    for kv in response:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            members.append(_member(bytes(kv.value)))
    return leader, members
