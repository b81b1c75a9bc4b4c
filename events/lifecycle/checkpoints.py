"""Checkpoints: the folded ClusterState saved with the revision it folds, so a
process starts from the latest one and folds only the events after it. Stored in
etcd as compressed chunks (a checkpoint of thousands of instances is larger than
one etcd request may be) under `checkpoints/<revision>/`, the manifest written
last, the newest few kept; copies go to the archive with the segments, where
`corral events --at` finds a starting point for old revisions.

A checkpoint names the fold version that made it: one made by a fold that
meant something else is ignored (and the log replayed), never trusted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from aetcd import rpc

from events.codec import CorruptEvent
from events.ids import InvalidName, instance_name, node_name
from events.projection import FOLD_VERSION
from events.state import ClusterState
from events.store import EventStore, _prefix_end, log
from events.validation import decoded_problems

if TYPE_CHECKING:  # imported where an archive is read or written: not to start
    from events.archive import IndexEntry

CHUNK = 1_000_000  # etcd refuses requests over 1.5 MiB by default
KEEP = 2
FORMAT = 2  # 1: the event codec's JSON (slow to decode at thousands of instances)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    revision: int
    events: int
    chunks: int
    size: int
    sha256: str
    fold_version: int
    format: int = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(
            {f: getattr(self, f) for f in self.__dataclass_fields__}, separators=(",", ":")
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        doc = json.loads(raw)
        return cls(**{f: doc[f] for f in cls.__dataclass_fields__})


# msgspec encodes and decodes the typed state itself (and checks every field's type
# on the way in) 20-30 times faster than the event codec's generic walk: a
# checkpoint of 2,000 instances decodes in about 50 ms, which bounds every
# `corral` command's start-up.
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(ClusterState)


def encode_checkpoint(state: ClusterState) -> bytes:
    return zlib.compress(_ENCODER.encode(state), 6)


def decode_checkpoint(data: bytes) -> ClusterState:
    try:
        state = _DECODER.decode(zlib.decompress(data))
    except zlib.error as exc:
        raise CorruptEvent(f"checkpoint: not a zlib stream: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise CorruptEvent(f"checkpoint: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise CorruptEvent(f"checkpoint: not JSON: {exc}") from exc
    # msgspec checks types, not corral's field rules: the desired specs and every
    # placed node's name are held to them as decoded events are, so a forged
    # checkpoint cannot reach a node either.
    problems = [str(p) for p in decoded_problems(state.desired)] + list(_bad_placements(state))
    if problems:
        raise CorruptEvent(f"checkpoint: {'; '.join(problems[:5])}")
    return state


def _bad_placements(state: ClusterState) -> Iterator[str]:
    for name, placement in state.placements.items():
        for node in (placement.primary, placement.secondary):
            try:
                instance_name(name)
                node_name(node)
            except InvalidName as exc:
                yield f"placements[{name!r}]: {exc}"


def _prefix(store: EventStore) -> bytes:
    return store.root + b"checkpoints/"


def _key(store: EventStore, revision: int, part: str) -> bytes:
    return _prefix(store) + b"%020d/" % revision + part.encode()


async def save_checkpoint(
    store: EventStore, state: ClusterState, *, views: bytes = b""
) -> Manifest:
    """Store `state` as the newest checkpoint (encoded off the event loop) and drop
    all but the newest KEEP. `views` (opaque here: the faces' per-instance views of
    this very state) are kept with it, so that a short-lived process starts with
    them instead of building every one again."""
    data = await asyncio.to_thread(encode_checkpoint, state)
    manifest = Manifest(
        revision=state.revision,
        events=state.event_count,
        chunks=(len(data) + CHUNK - 1) // CHUNK,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        fold_version=FOLD_VERSION,
    )
    for n in range(manifest.chunks):
        await store._call(
            store.client.put(
                _key(store, state.revision, f"{n:04d}"), data[n * CHUNK : (n + 1) * CHUNK]
            ),
            operation="checkpoint",
        )
    packed = zlib.compress(views, 6) if views else b""
    if packed and len(packed) <= CHUNK:
        await store._call(
            store.client.put(_key(store, state.revision, "views"), packed),
            operation="checkpoint",
        )
    await store._call(
        store.client.put(_key(store, state.revision, "manifest"), manifest.to_json()),
        operation="checkpoint",
    )
    for old in (await manifests(store))[:-KEEP]:
        start = _prefix(store) + b"%020d/" % old.revision
        await store._call(store.client.delete_range(start, _prefix_end(start)))
    return manifest


async def manifests(store: EventStore) -> list[Manifest]:
    """The complete checkpoints in etcd, oldest first (their manifests read
    together)."""
    request = rpc.RangeRequest(
        key=_prefix(store), range_end=_prefix_end(_prefix(store)), keys_only=True
    )
    response: Any = await store._call(
        store.client.kvstub.Range(request, metadata=store.client.metadata)
    )
    keys = [bytes(kv.key) for kv in response.kvs if bytes(kv.key).endswith(b"/manifest")]
    values: list[Any] = await asyncio.gather(*(store._call(store.client.get(k)) for k in keys))
    found = []
    for key, got in zip(keys, values, strict=True):
        if not got:
            continue
        try:
            found.append(Manifest.from_json(bytes(got.value)))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("checkpoint manifest unreadable; skipped", key=key, why=str(exc))
    return sorted(found, key=lambda m: m.revision)


async def _read(store: EventStore, manifest: Manifest) -> bytes:
    start = _prefix(store) + b"%020d/" % manifest.revision
    got: Any = await store._call(store.client.get_range(start, _prefix_end(start)))
    chunks = sorted(
        (bytes(kv.key), bytes(kv.value))
        for kv in got
        if not bytes(kv.key).endswith((b"manifest", b"views"))
    )
    data = b"".join(v for _, v in chunks)
    if len(chunks) != manifest.chunks or hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise CorruptEvent(f"checkpoint at revision {manifest.revision}: chunks do not match")
    return data


async def usable_manifests(store: EventStore, *, at_most: int | None = None) -> list[Manifest]:
    """The checkpoints in etcd this fold may start from (made by this fold
    version, in this format, at or below `at_most`), oldest first."""
    return [
        m
        for m in await manifests(store)
        if m.fold_version == FOLD_VERSION
        and m.format == FORMAT
        and (at_most is None or m.revision <= at_most)
    ]


async def load_checkpoint(
    store: EventStore,
    *,
    at_most: int | None = None,
    candidates: list[Manifest] | None = None,
) -> ClusterState | None:
    """The newest usable checkpoint (at or below `at_most`), from etcd or, for
    revisions etcd no longer holds a checkpoint of, from the archive. One that
    does not validate is never used: the next older one is tried.
    `candidates`: `usable_manifests(store, at_most=at_most)` if already read."""
    if candidates is None:
        candidates = await usable_manifests(store, at_most=at_most)
    for manifest in reversed(candidates):
        try:
            data = await _read(store, manifest)
            return await asyncio.to_thread(decode_checkpoint, data)
        except CorruptEvent as exc:
            log.warning("checkpoint unusable; trying an older one", why=str(exc))
    if at_most is None:
        return None
    return await _archived_checkpoint(store, at_most=at_most)


async def checkpoint_views(store: EventStore, revision: int) -> bytes:
    """The views saved with the checkpoint at `revision`; b"" if none (or unreadable)."""
    got: Any = await store._call(store.client.get(_key(store, revision, "views")))
    if not got:
        return b""
    try:
        return zlib.decompress(bytes(got.value))
    except zlib.error:
        return b""


async def _archived_checkpoint(store: EventStore, *, at_most: int) -> ClusterState | None:
    from events.archive import ArchiveError, check_object, open_archive

    for entry in reversed(await archived_checkpoints(store)):
        if entry.last_revision > at_most:
            continue
        try:
            data = await open_archive(store.archive_url(entry.location)).get(entry.name)
            check_object(entry, data)
            state = await asyncio.to_thread(decode_checkpoint, data)
        except (ArchiveError, CorruptEvent) as exc:
            log.warning("archived checkpoint unusable; trying an older one", why=str(exc))
            continue
        return state
    return None


async def archived_checkpoints(store: EventStore) -> list[IndexEntry]:
    from events.archive import IndexEntry

    prefix = store.root + b"archive/checkpoints/"
    got: Any = await store._call(store.client.get_prefix(prefix))
    entries = [IndexEntry.from_json(bytes(kv.value), key=bytes(kv.key).decode()) for kv in got]
    return sorted(entries, key=lambda e: e.last_revision)


async def archive_checkpoint(store: EventStore, manifest: Manifest, url: str) -> IndexEntry:
    """Copy the checkpoint `manifest` names into the archive and index it."""
    from events.archive import IndexEntry, check_object, checkpoint_object_name, open_archive

    data = await _read(store, manifest)
    archive = open_archive(url)
    name = checkpoint_object_name(manifest.revision, data)
    await archive.put(name, data)
    entry = IndexEntry(
        kind="checkpoint",
        seq=0,
        name=name,
        location=url,
        sha256=manifest.sha256,
        size=manifest.size,
        first_revision=manifest.revision,
        last_revision=manifest.revision,
        events=manifest.events,
    )
    check_object(entry, await archive.get(name))
    key = store.root + b"archive/checkpoints/%020d" % manifest.revision
    await store._call(store.client.put(key, entry.to_json()), operation="archive")
    return entry
