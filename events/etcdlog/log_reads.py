"""Reading the event log back: archived segments first, then etcd, in revision
order (the events of one append in their append order), as of one pinned
revision, decoded (corrupt records reported and stood in for).

etcd is read through the order index (events.etcdlog.log_order): a page of `order/`
keys by key, then the records those keys name by key, a transaction of point
reads at a time, so a page costs etcd the page, not the log. etcd 3.4 answers a
Range sorted or filtered by revision by reading every key of the range; that is
how the log was read before the index, and how its part older than the index
(`order-legacy`) still is, bounded to that part.

A mixin of `events.store.EventStore` (its connection, its caches): must not
write to etcd.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aetcd import rpc

from events.etcd_client import EtcdPermissionDenied
from events.etcdlog.log_order import COUNTER, LEGACY, ORDER_DIR, decode_ids, parse_counter, seq_of
from events.etcdlog.record_reads import RecordReads
from events.etcdlog.store_errors import (
    Compacted,
    CorruptRecord,
    EtcdUnavailable,
    channel_reset,
    denied,
    prefix_end,
)
from events.model import Event

if TYPE_CHECKING:
    pass

T = TypeVar("T")

PAGE = 1000  # events per page, about
ORDER_PAGE = 256  # order keys read per request
GETS_PER_TXN = 120  # point reads per transaction (etcd's --max-txn-ops is 128)
PROBES = 64  # order keys probed per request when looking for a revision


def _log() -> Any:
    import structlog

    return structlog.get_logger("corral.store")


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexBounds:
    """The order index as of revision `revision`: where it starts (`origin`, the
    create revision of `order-next`; 0 without an index), whether older events
    are read the old way (`legacy`), its first stored seq and the next seq."""

    revision: int
    origin: int
    legacy: bool
    first_seq: int
    next_seq: int
    first_revision: int = 0  # of the first stored order key (0: none)


class LogReads(RecordReads):
    """The read side of the event store."""

    if TYPE_CHECKING:  # the rest is declared by RecordReads
        identity: str

        @property
        def events_prefix(self) -> bytes: ...

        def event_key(self, event_id: str) -> bytes: ...

        async def _call(self, awaitable: Awaitable[T], *, operation: str = "get") -> T: ...

    # ------------------------------------------------------------------ the log

    async def read_all(
        self, *, from_revision: int = 0, known: frozenset[str] = frozenset()
    ) -> AsyncIterator[tuple[int, Event]]:
        """Every event with revision >= from_revision, in order: archived segments
        first, then etcd, read as of one revision so that an archiving pass
        deleting keys meanwhile hides nothing (a compaction under the read makes
        it start again from where it was). Events of `from_revision` itself whose
        ids are `known` (a checkpoint holds them) are not even read. Corrupt
        records are reported (self.corrupt, a warning naming the key) and skipped."""
        next_rev = max(from_revision, 0)
        while True:
            segments, pinned = await self.archived_segments()
            for entry in segments:
                if entry.last_revision < next_rev:
                    continue
                for revision, event in await self._archived_events(entry):
                    if revision >= next_rev:
                        yield revision, event
                next_rev = entry.last_revision + 1
            try:
                skip = known if next_rev == from_revision else frozenset()
                pages = self.event_pages(next_rev, pinned=pinned, skip=skip)
                async for kvs in pages:
                    for revision, event in self._decode_group(kvs):
                        yield revision, event
                    if kvs:  # pages hold whole revisions
                        next_rev = max(int(kv.create_revision) for kv in kvs) + 1
                return
            except Compacted as exc:
                next_rev = max(next_rev, exc.resume_at)
                _log().info("log compacted under a read; reading on", revision=next_rev)

    async def event_pages(
        self,
        from_revision: int,
        *,
        pinned: int = 0,
        to_revision: int = 0,
        skip: frozenset[str] = frozenset(),
    ) -> AsyncGenerator[list[Any], None]:
        """The stored event records with revision >= from_revision (and <=
        to_revision when given), about a page of whole revisions at a time, in
        revision order, as of revision `pinned` (0: the newest); the records of
        `from_revision` whose ids are in `skip` left out. Raises Compacted when
        etcd no longer holds `pinned`."""
        start = max(from_revision, 0)
        bounds = await self._index_bounds(pinned, resume_at=start)
        pinned = bounds.revision
        # The part of the log older than the index (all of it without one).
        last = bounds.origin - 1 if bounds.origin else to_revision
        if to_revision:
            last = min(last, to_revision) if last else to_revision
        if (not bounds.origin or bounds.legacy) and (not last or start <= last):
            async for kvs in self._legacy_pages(start, pinned=pinned, to_revision=last):
                yield self._without(kvs, from_revision, skip) if skip else kvs
        if not bounds.origin:
            return
        first = max(start, bounds.origin)
        if to_revision and first > to_revision:
            return
        pages = self._indexed_pages(
            bounds, first, to_revision=to_revision, skip=skip if first == from_revision else None
        )
        listed = 0
        async for kvs in pages:
            listed += len(kvs)
            yield kvs
        whole = start <= 1 or (not bounds.legacy and start <= bounds.first_revision)
        if whole and not to_revision and not skip and not bounds.legacy:
            await self._check_unlisted(pinned, listed)

    async def _check_unlisted(self, pinned: int, listed: int) -> None:
        """After a read of everything etcd holds: event records no append listed
        (put by something other than corral's append) are not read; say so
        (a count of the keys: etcd reads no value for it)."""
        request = rpc.RangeRequest(
            key=self.events_prefix,
            range_end=prefix_end(self.events_prefix),
            count_only=True,
            revision=pinned,
        )
        response = await self._raw(self._range(request), resume_at=pinned + 1)
        stray = int(response.count) - listed
        if stray > 0:
            key = self.events_prefix.decode()
            why = f"{stray} event records in etcd are not in the order index: not read"
            self.corrupt.append(CorruptRecord(key=key, revision=pinned, why=why))
            _log().warning("event records outside the log", key=key, stray=stray)

    def _without(self, kvs: list[Any], revision: int, skip: frozenset[str]) -> list[Any]:
        cut = len(self.events_prefix)
        return [
            kv
            for kv in kvs
            if kv.create_revision != revision
            or bytes(kv.key)[cut:].decode(errors="replace") not in skip
        ]

    async def ids_at(self, revision: int) -> frozenset[str]:
        """The ids of the events appended at `revision` (read from the order
        index, or from the event keys for a revision older than it)."""
        bounds = await self._index_bounds(0, resume_at=revision)
        if not bounds.origin or (bounds.legacy and revision < bounds.origin):
            request = rpc.RangeRequest(
                key=self.events_prefix,
                range_end=prefix_end(self.events_prefix),
                keys_only=True,
                min_create_revision=revision,
                max_create_revision=revision,
            )
            response: Any = await self._call(
                self.client.kvstub.Range(
                    request, timeout=self.client._timeout, metadata=self.client.metadata
                )
            )
            cut = len(self.events_prefix)
            return frozenset(bytes(kv.key)[cut:].decode(errors="replace") for kv in response.kvs)
        seq = await self._seq_near(bounds, revision)
        for kv in await self._order_range(seq, pinned=bounds.revision, resume_at=revision):
            if kv.create_revision == revision:
                return frozenset(decode_ids(bytes(kv.value)))
            if kv.create_revision > revision:
                break
        return frozenset()

    # ------------------------------------------------------------------ the order index

    async def _index_bounds(self, pinned: int, *, resume_at: int) -> IndexBounds:
        """One read-only transaction at `pinned`: the counter, the legacy marker
        and the first order key."""
        order = self.root + ORDER_DIR
        requests = [
            rpc.RangeRequest(key=self.root + COUNTER, revision=pinned),
            rpc.RangeRequest(key=self.root + LEGACY, revision=pinned, keys_only=True),
            rpc.RangeRequest(
                key=order, range_end=prefix_end(order), limit=1, keys_only=True, revision=pinned
            ),
        ]
        header, (counter, legacy, first) = await self._ranges(requests, resume_at=resume_at)
        if not counter:
            return IndexBounds(
                revision=pinned or header, origin=0, legacy=True, first_seq=0, next_seq=0
            )
        next_seq = parse_counter(bytes(counter[0].value))
        return IndexBounds(
            revision=pinned or header,
            origin=int(counter[0].create_revision),
            legacy=bool(legacy),
            first_seq=seq_of(self.root, bytes(first[0].key)) if first else next_seq,
            next_seq=next_seq,
            first_revision=int(first[0].create_revision) if first else 0,
        )

    async def index_keys_through(self, revision: int) -> list[bytes]:
        """The order index's keys of the appends at or below `revision` (for
        retention to delete with their events), and the legacy marker once every
        event older than the index is at or below it."""
        bounds = await self._index_bounds(0, resume_at=0)
        if not bounds.origin:
            return []
        out = [self.root + LEGACY] if bounds.legacy and revision >= bounds.origin - 1 else []
        for seq in range(bounds.first_seq, bounds.next_seq, ORDER_PAGE):
            kvs = await self._order_range(seq, pinned=bounds.revision, resume_at=0, keys_only=True)
            for kv in kvs:
                if kv.create_revision > revision:
                    return out
                out.append(bytes(kv.key))
        return out

    async def _seq_near(self, bounds: IndexBounds, revision: int) -> int:
        """A seq no later than the first order key at or after `revision`, and at
        most ORDER_PAGE before it: PROBES order keys probed per request, each
        probe the first key at or after a seq (a key-ordered read of one key)."""
        lo, hi = bounds.first_seq, bounds.next_seq
        order = self.root + ORDER_DIR
        while hi - lo >= ORDER_PAGE:
            step = (hi - lo) / PROBES
            probes = sorted({lo + int(step * i) for i in range(1, PROBES)})
            # Each probe reads the first key of its own window: etcd 3.4 walks
            # its key index over the whole range asked for, whatever the limit.
            ends = [*probes[1:], hi]
            requests = [
                rpc.RangeRequest(
                    key=order + b"%016d" % p,
                    range_end=order + b"%016d" % end,
                    limit=1,
                    keys_only=True,
                    revision=bounds.revision,
                )
                for p, end in zip(probes, ends, strict=True)
            ]
            _, found = await self._ranges(requests, resume_at=revision)
            new_hi = hi
            for p, kvs in zip(probes, found, strict=True):
                if kvs and kvs[0].create_revision < revision:
                    lo = p  # every key before p is older still
                else:
                    new_hi = p
                    break
            hi = new_hi
        return lo

    async def _order_range(
        self, seq: int, *, pinned: int, resume_at: int, keys_only: bool = False
    ) -> list[Any]:
        """The order keys of seqs seq to seq + ORDER_PAGE - 1, as of `pinned`: a
        window, not the rest of the index (etcd 3.4 walks its key index over the
        whole range asked for, whatever the limit)."""
        order = self.root + ORDER_DIR
        request = rpc.RangeRequest(
            key=order + b"%016d" % seq,
            range_end=order + b"%016d" % (seq + ORDER_PAGE),
            limit=ORDER_PAGE,
            revision=pinned,
            keys_only=keys_only,
        )
        _, (kvs,) = await self._ranges([request], resume_at=resume_at)
        return kvs

    async def _indexed_pages(
        self,
        bounds: IndexBounds,
        start: int,
        *,
        to_revision: int,
        skip: frozenset[str] | None,
    ) -> AsyncGenerator[list[Any], None]:
        seq = await self._seq_near(bounds, start)
        first = start
        while seq < bounds.next_seq:
            order = await self._order_range(seq, pinned=bounds.revision, resume_at=start)
            seq += ORDER_PAGE
            wanted: list[tuple[int, str]] = []
            done = False
            for kv in order:
                revision = int(kv.create_revision)
                if revision < start:
                    continue
                if to_revision and revision > to_revision:
                    done = True
                    break
                ids = decode_ids(bytes(kv.value))
                if skip and revision == first:
                    ids = [i for i in ids if i not in skip]
                wanted.extend((revision, i) for i in ids)
                if len(wanted) >= PAGE:
                    yield await self._records(wanted, pinned=bounds.revision)
                    start, wanted = revision + 1, []
            if wanted:
                yield await self._records(wanted, pinned=bounds.revision)
                start = wanted[-1][0] + 1
            if done:
                return

    async def _records(self, wanted: list[tuple[int, str]], *, pinned: int) -> list[Any]:
        """The records of `wanted` (revision, id), read by key as of `pinned`, in
        transactions of point reads sent together. An id the index lists whose
        record is not there (or is another append's) is reported as corrupt."""
        requests = [rpc.RangeRequest(key=self.event_key(i), revision=pinned) for _, i in wanted]
        chunks = [requests[i : i + GETS_PER_TXN] for i in range(0, len(requests), GETS_PER_TXN)]
        answers = await asyncio.gather(
            *(self._ranges(chunk, resume_at=wanted[0][0]) for chunk in chunks)
        )
        found = [kvs for _, got in answers for kvs in got]
        out = []
        for (revision, event_id), kvs in zip(wanted, found, strict=True):
            if kvs and kvs[0].create_revision == revision:
                out.append(kvs[0])
                continue
            key = self.event_key(event_id).decode(errors="replace")
            why = "listed in the order index but not stored at that revision"
            self.corrupt.append(CorruptRecord(key=key, revision=revision, why=why))
            _log().warning("event missing from the log", key=key, revision=revision, why=why)
        return out

    async def _legacy_pages(
        self, from_revision: int, *, pinned: int, to_revision: int
    ) -> AsyncGenerator[list[Any], None]:
        """The log before the order index: a Range sorted and filtered by create
        revision, which etcd answers by reading every event key (a page costs a
        read of every event kept). Only the part of the log older than the index
        is read this way."""
        start, end = self.events_prefix, prefix_end(self.events_prefix)
        min_rev = max(from_revision, 0)
        while True:
            request = rpc.RangeRequest(
                key=start,
                range_end=end,
                limit=PAGE,
                sort_order=rpc.RangeRequest.ASCEND,
                sort_target=rpc.RangeRequest.CREATE,
                min_create_revision=min_rev,
                max_create_revision=max(to_revision, 0),
                revision=pinned,
            )
            response = await self._raw(self._range(request), resume_at=min_rev)
            kvs = list(response.kvs)
            if not kvs:
                return
            if response.more and kvs[-1].create_revision != kvs[0].create_revision:
                last = kvs[-1].create_revision
                kvs = [kv for kv in kvs if kv.create_revision != last]
                min_rev = last
            else:
                min_rev = kvs[-1].create_revision + 1
            yield kvs
            if not response.more:
                return

    async def read_object(self, object_key: str) -> list[tuple[int, Event]]:
        """One object's events, in order (a scan: the log is the index)."""
        return [(r, e) async for r, e in self.read_all() if object_key in e.objects()]

    async def current_revision(self) -> int:
        """etcd's head revision, from a count-only read of the cluster's prefix
        (no values travel)."""
        request = rpc.RangeRequest(key=self.root, range_end=prefix_end(self.root), count_only=True)
        response = await self._call(
            self.client.kvstub.Range(
                request, timeout=self.client._timeout, metadata=self.client.metadata
            )
        )
        return int(response.header.revision)

    # ------------------------------------------------------------------ requests

    def _range(self, request: Any) -> Awaitable[Any]:
        return self.client.kvstub.Range(  # type: ignore[no-any-return]
            request, timeout=self.client._timeout, metadata=self.client.metadata
        )

    async def _ranges(
        self, requests: Sequence[Any], *, resume_at: int
    ) -> tuple[int, list[list[Any]]]:
        """Several range reads in one read-only transaction (not replicated:
        etcd answers it like a range): the header revision and each one's kvs."""
        txn = rpc.TxnRequest(
            compare=[], success=[rpc.RequestOp(request_range=r) for r in requests], failure=[]
        )
        response = await self._raw(
            self.client.kvstub.Txn(
                txn, timeout=self.client._timeout, metadata=self.client.metadata
            ),
            resume_at=resume_at,
        )
        kvs = [list(r.response_range.kvs) for r in response.responses]
        return int(response.header.revision), kvs

    async def _raw(self, call: Awaitable[Any], *, resume_at: int) -> Any:
        try:
            return await call
        except asyncio.CancelledError as exc:
            if not channel_reset():
                raise
            raise EtcdUnavailable(self.endpoint, "the connection was reset") from exc
        except Exception as exc:
            if "compacted" in str(exc):
                raise Compacted(resume_at) from exc
            if denied(exc):
                raise EtcdPermissionDenied(
                    identity=self.identity, operation="reading the log", detail=str(exc)
                ) from None
            raise EtcdUnavailable(self.endpoint, type(exc).__name__) from exc
