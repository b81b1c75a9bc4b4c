"""Stored event records turned back into events: those etcd holds (`<index>\\n<json>`,
the index ordering the events of one append) and those of an archived segment
(read from the archive, checked against its index entry, decoded off the event
loop, the last two segments kept). A corrupt record is reported (`corrupt`, a
warning naming its key) and stands in as an `event.undecodable`.

A mixin of `events.store.EventStore`: must not write to etcd, and must not
decide what part of the log to read (events.etcdlog.log_reads does).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aetcd import rpc

from events.codec import CorruptEvent, decode, undecodable
from events.etcdlog.store_errors import (
    ArchiveUnreadable,
    CorruptRecord,
    EtcdUnavailable,
    channel_reset,
    prefix_end,
)
from events.model import Event

if TYPE_CHECKING:
    import aetcd

    from events.archive import IndexEntry, RawRecord


def _log() -> Any:
    import structlog

    return structlog.get_logger("corral.store")


class RecordReads:
    """Decoding records, and reading the archive's segments."""

    if TYPE_CHECKING:
        client: aetcd.Client
        endpoint: str
        corrupt: list[CorruptRecord]
        archive_override: str
        _segments: dict[int, IndexEntry]
        _segment_cache: dict[int, list[tuple[int, Event]]]
        _written: dict[bytes, tuple[bytes, int, Event]]

        @property
        def root(self) -> bytes: ...

    async def archived_segments(self) -> tuple[list[IndexEntry], int]:
        """The archive's segments, oldest first, and the etcd revision this list
        is current at (entries never change once written: only new ones are read)."""
        prefix = self.root + b"archive/segments/"
        after = max(self._segments, default=-1) + 1
        request = rpc.RangeRequest(key=prefix + b"%012d" % after, range_end=prefix_end(prefix))
        try:
            response = await self.client.kvstub.Range(
                request, timeout=self.client._timeout, metadata=self.client.metadata
            )
        except asyncio.CancelledError as exc:
            if not channel_reset():
                raise
            raise EtcdUnavailable(self.endpoint, "the connection was reset") from exc
        except Exception as exc:
            raise EtcdUnavailable(self.endpoint, type(exc).__name__) from exc
        if response.kvs:  # an archive: its code is imported only now
            from events.archive import IndexEntry

            for kv in response.kvs:
                entry = IndexEntry.from_json(bytes(kv.value), key=bytes(kv.key).decode())
                self._segments[entry.seq] = entry
        return [self._segments[k] for k in sorted(self._segments)], int(response.header.revision)

    def archive_url(self, recorded: str) -> str:
        return self.archive_override or recorded

    async def archived_records(self, entry: IndexEntry) -> tuple[list[RawRecord], list[RawRecord]]:
        """One segment's (seals, events) as stored, after checking the object
        against its index entry (CorruptArchive, ArchiveError otherwise)."""
        from events.archive import check_object, decode_segment, open_archive

        data = await open_archive(self.archive_url(entry.location)).get(entry.name)
        check_object(entry, data)
        segment = await asyncio.to_thread(decode_segment, data, name=entry.name)
        return list(segment.seals), list(segment.events)

    async def _archived_events(self, entry: IndexEntry) -> list[tuple[int, Event]]:
        cached = self._segment_cache.get(entry.seq)
        if cached is not None:
            return cached
        from events.archive import ArchiveError

        try:
            _, records = await self.archived_records(entry)
        except ArchiveError as exc:
            raise ArchiveUnreadable(entry, str(exc)) from exc
        decoded = await asyncio.to_thread(self._decode_records, records)
        if len(self._segment_cache) >= 2:
            self._segment_cache.pop(next(iter(self._segment_cache)))
        self._segment_cache[entry.seq] = decoded
        return decoded

    def _decode_records(self, records: list[RawRecord]) -> list[tuple[int, Event]]:
        out: list[tuple[int, int, Event]] = []
        for record in records:
            try:
                index, event = self._decode_value(record.value)
            except CorruptEvent as exc:
                self.corrupt.append(
                    CorruptRecord(key=record.key, revision=record.revision, why=str(exc))
                )
                _log().warning("corrupt archived event skipped", key=record.key, why=str(exc))
                index, event = self._stand_in(record.value, key=record.key, why=str(exc))
            out.append((record.revision, index, event))
        out.sort(key=lambda t: (t[0], t[1]))
        return [(r, e) for r, _, e in out]

    def _decode_group(self, kvs: list[object]) -> list[tuple[int, Event]]:
        decoded: list[tuple[int, int, Event]] = []
        for kv in kvs:
            revision = int(kv.create_revision)  # type: ignore[attr-defined]
            raw_key = bytes(kv.key)  # type: ignore[attr-defined]
            value = bytes(kv.value)  # type: ignore[attr-defined]
            written = self._written.pop(raw_key, None)
            if written is not None and written[0] == value:
                decoded.append((revision, written[1], written[2]))
                continue
            key = raw_key.decode(errors="replace")
            try:
                index, event = self._decode_value(value)
            except CorruptEvent as exc:
                record = CorruptRecord(key=key, revision=revision, why=str(exc))
                self.corrupt.append(record)
                _log().warning("corrupt event skipped", key=key, revision=revision, why=str(exc))
                index, event = self._stand_in(bytes(kv.value), key=key, why=str(exc))  # type: ignore[attr-defined]
            decoded.append((revision, index, event))
        decoded.sort(key=lambda t: (t[0], t[1]))
        return [(r, e) for r, _, e in decoded]

    @staticmethod
    def _stand_in(raw: bytes, *, key: str, why: str) -> tuple[int, Event]:
        """A corrupt record as an `event.undecodable` in its place: the fold alerts on
        it and keeps the versions of the objects it names (never applies it)."""
        head, sep, body = raw.partition(b"\n")
        index = int(head) if sep and head.isdigit() and len(head) < 10 else 1 << 30
        return index, undecodable(body if sep else raw, key=key, why=why)

    @staticmethod
    def _decode_value(raw: bytes) -> tuple[int, Event]:
        head, sep, body = raw.partition(b"\n")
        if not sep or not head.isdigit():
            raise CorruptEvent("missing batch index")
        return int(head), decode(body)
