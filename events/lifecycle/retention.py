"""Retention: one archiving pass moves the oldest sealed events out of etcd into
the archive and compacts etcd, so the log outgrows neither etcd's quota nor its
start-up read. A pass archives only whole seals, only events a checkpoint
already folds (a process never needs the archive to start), leaves the newest
`keep_events` in etcd, checks every event against its seal before archiving it,
reads the written object back, records it in the index with a create-if-absent
transaction (two archivers racing: one wins, the other deletes nothing), and only
then deletes the archived keys (the events, their seals and their order index
entries, events.etcdlog.log_order) and compacts.

Must not fold or decide anything about the cluster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from events.archive import (
    IndexEntry,
    RawRecord,
    Segment,
    encode_segment,
    open_archive,
    segment_name,
)
from events.etcd_client import EtcdPermissionDenied
from events.lifecycle.checkpoints import archive_checkpoint, manifests
from events.lifecycle.seals import (
    Seal,
    blocks_of,
    check_block,
    load_seals,
    parse_seal,
    raw_events,
    raw_seals,
)
from events.store import MAX_TXN_OPS, EventStore, _prefix_end, log


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPolicy:
    url: str  # the archive
    keep_events: int = 200_000  # the newest events stay in etcd
    min_segment_events: int = 50_000  # archive no fewer at once
    defragment: bool = True  # give the freed space back to etcd's quota


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivePass:
    segment: IndexEntry
    deleted_keys: int
    compacted_at: int


class ArchiveRefused(Exception):
    """The events to archive do not match their seals: nothing was archived."""


async def count_events(store: EventStore) -> int:
    from aetcd import rpc

    request = rpc.RangeRequest(
        key=store.events_prefix, range_end=_prefix_end(store.events_prefix), count_only=True
    )
    response: Any = await store._call(
        store.client.kvstub.Range(request, metadata=store.client.metadata)
    )
    return int(response.count)


def _choose(seals: list[Seal], *, up_to: int, most: int) -> list[Seal]:
    """The longest run of oldest seals ending at or below `up_to` and holding at
    most `most` events."""
    chosen: list[Seal] = []
    total = 0
    for seal in seals:
        if seal.last_revision > up_to or total + len(seal.keys) > most:
            break
        chosen.append(seal)
        total += len(seal.keys)
    return chosen


async def archive_pass(store: EventStore, policy: RetentionPolicy) -> ArchivePass | None:
    """Archive one segment if enough sealed, checkpointed events wait; None if not
    (or if another archiver got there first)."""
    checkpoints = await manifests(store)
    if not checkpoints:
        return None
    newest = checkpoints[-1]
    total = await count_events(store)
    seals = await load_seals(store)
    chosen = _choose(seals, up_to=newest.revision, most=total - policy.keep_events)
    events_n = sum(len(s.keys) for s in chosen)
    if not chosen or events_n < policy.min_segment_events:
        return None
    first, last = chosen[0], chosen[-1]
    stored = await raw_events(store, first.first_revision, to_revision=last.last_revision)
    prev = first.prev
    for block in blocks_of(chosen, stored, where="etcd"):
        problem, key, revision = check_block(block, prev)
        if problem:
            raise ArchiveRefused(f"not archived: {problem} (key {key}, revision {revision})")
        prev = block.seal.chain
    wanted = {s.seq for s in chosen}
    seal_records = [r for r in await raw_seals(store) if parse_seal(r.value).seq in wanted]
    segments, _ = await store.archived_segments()
    seq = segments[-1].seq + 1 if segments else 0
    segment = Segment(
        cluster=store.cluster,
        seq=seq,
        first_revision=first.first_revision,
        last_revision=last.last_revision,
        seals=tuple(seal_records),
        events=tuple(RawRecord(revision=r, key=k, value=v) for r, _, k, v in stored),
    )
    data = encode_segment(segment)
    archive = open_archive(policy.url)
    name = segment_name(segment, data)
    await archive.put(name, data)
    entry = IndexEntry(
        kind="segment",
        seq=seq,
        name=name,
        location=policy.url,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        first_revision=segment.first_revision,
        last_revision=segment.last_revision,
        events=len(segment.events),
        last_seal_key=seal_records[-1].key,
        last_seal=seal_records[-1].value.decode(),
    )
    if hashlib.sha256(await archive.get(name)).hexdigest() != entry.sha256:
        raise ArchiveRefused(f"archive {policy.url}: {name} reads back different bytes")
    await archive_checkpoint(store, newest, policy.url)
    tx = store.client.transactions
    index_key = store.root + b"archive/segments/%012d" % seq
    won, _ = await store._call(
        store.client.transaction(
            compare=[tx.create(index_key) == 0],
            success=[tx.put(index_key, entry.to_json())],
            failure=[],
        ),
        operation="archive",
    )
    if not won:
        log.info("another archiver indexed this segment first", seq=seq)
        return None
    doomed = [r.key.encode() for r in segment.events] + [r.key.encode() for r in seal_records]
    # The order index's entries of the archived appends go with them (a read
    # never asks etcd for revisions the archive holds).
    doomed += await store.index_keys_through(segment.last_revision)
    for i in range(0, len(doomed), MAX_TXN_OPS):
        await store._call(
            store.client.transaction(
                compare=[], success=[tx.delete(k) for k in doomed[i : i + MAX_TXN_OPS]], failure=[]
            ),
            operation="archive",
        )
    revision = await store.current_revision()
    await store.compact(revision)
    if policy.defragment:
        try:
            await store._call(store.client.defragment(), operation="archive")
        except EtcdPermissionDenied:
            # etcd lets only its root user defragment; the orchestrator's role
            # is not root (docs/security.md): the operators schedule it.
            log.warning("defragment refused: it needs etcd's root user (etcdctl defrag)")
    log.info(
        "archived",
        segment=name,
        events=entry.events,
        revisions=f"{entry.first_revision}-{entry.last_revision}",
        compacted_at=revision,
    )
    return ArchivePass(segment=entry, deleted_keys=len(doomed), compacted_at=revision)
