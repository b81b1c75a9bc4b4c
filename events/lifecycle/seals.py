"""Audit seals: a tamper-evident chain over the stored event log. Every block of
events (in log order) is sealed with the digest of each event's stored bytes and a
running hash chained to the previous seal, under `/corral/<cluster>/seals/<seq>`,
and signed with an Ed25519 key that lives on the orchestrator hosts, not in etcd
(events.lifecycle.seal_keys): a hash chain alone can be recomputed by anyone who can write
etcd, a signature cannot. Each seal names its algorithm and key id, so seals
archived before a key rotation still verify against the old public key.
`verify` re-reads the log and names the first event whose bytes no longer match,
an event missing from or added to a sealed block, or a seal whose signature does
not verify.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
from contextlib import aclosing
from dataclasses import dataclass, replace

from events.archive import ArchiveError, IndexEntry, RawRecord
from events.lifecycle.seal_keys import ALGORITHM, SealKeys, SealSigner
from events.store import EventStore, _prefix_end

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Seal:
    seq: int
    first_revision: int
    last_revision: int
    keys: tuple[str, ...]
    digests: tuple[str, ...]
    prev: str
    chain: str
    # The signature over `body()`: algorithm, key id, base64 (all "" if unsigned:
    # a seal made without a key, which shows accidents but not tampering).
    alg: str = ""
    key_id: str = ""
    sig: str = ""

    def body(self) -> bytes:
        """The signed bytes: every field but the signature, canonical JSON."""
        doc = _as_dict(self)
        del doc["sig"]
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    ok: bool
    sealed_events: int
    seals: int
    problem: str = ""
    key: str = ""
    revision: int = 0
    signed: int = 0  # seals whose signature was checked
    keyed: bool = False  # checked against seal keys (else hashes only)


def _digest(key: bytes, value: bytes) -> str:
    return hashlib.sha256(key + b"\0" + value).hexdigest()


def _chain(prev: str, digests: tuple[str, ...]) -> str:
    h = hashlib.sha256(prev.encode())
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()


async def raw_events(
    store: EventStore, from_revision: int, *, to_revision: int = 0, limit: int = 0
) -> list[tuple[int, int, str, bytes]]:
    """(revision, batch index, key, stored value) in log order, read a page at a
    time; up to `to_revision` (0: the end) and at most about `limit` (0: all)."""
    out: list[tuple[int, int, str, bytes]] = []
    pages = store.event_pages(from_revision, to_revision=to_revision)
    async with aclosing(pages):
        async for kvs in pages:
            for kv in kvs:
                value = bytes(kv.value)
                head = value.partition(b"\n")[0]
                index = int(head) if head.isdigit() else 0
                out.append((int(kv.create_revision), index, bytes(kv.key).decode(), value))
            if limit and len(out) >= limit:
                break
    out.sort(key=lambda t: (t[0], t[1], t[2]))
    return out


def _seal_key(store: EventStore, seq: int) -> bytes:
    return store.root + b"seals/%012d" % seq


def parse_seal(raw: bytes) -> Seal:
    doc = json.loads(raw)
    return Seal(
        seq=doc["seq"],
        first_revision=doc["first_revision"],
        last_revision=doc["last_revision"],
        keys=tuple(doc["keys"]),
        digests=tuple(doc["digests"]),
        prev=doc["prev"],
        chain=doc["chain"],
        alg=doc.get("alg", ""),
        key_id=doc.get("key_id", ""),
        sig=doc.get("sig", ""),
    )


# Seals read per range request. A seal of 100 events holds their keys and digests,
# some 13 KB: all of them in one response passed gRPC's 4 MB limit at about 30,000
# events, far below the 200,000 an archiving orchestrator keeps in etcd.
SEAL_PAGE = 100


async def raw_seals(store: EventStore) -> list[RawRecord]:
    """The seal keys as stored, in seq order (the keys are zero-padded), read a
    page at a time."""
    from aetcd import rpc

    prefix = store.root + b"seals/"
    start, end = prefix, _prefix_end(prefix)
    out: list[RawRecord] = []
    while True:
        request = rpc.RangeRequest(key=start, range_end=end, limit=SEAL_PAGE)
        response = await store.client.kvstub.Range(request, metadata=store.client.metadata)
        out.extend(
            RawRecord(
                revision=int(kv.create_revision), key=bytes(kv.key).decode(), value=bytes(kv.value)
            )
            for kv in response.kvs
        )
        if not response.more or not response.kvs:
            return out
        start = bytes(response.kvs[-1].key) + b"\0"


async def load_seals(store: EventStore) -> list[Seal]:
    """The seals still in etcd (archived ones went with their segments)."""
    return sorted((parse_seal(r.value) for r in await raw_seals(store)), key=lambda s: s.seq)


async def _newest_seal(store: EventStore) -> Seal | None:
    from aetcd import rpc

    prefix = store.root + b"seals/"
    request = rpc.RangeRequest(
        key=prefix,
        range_end=_prefix_end(prefix),
        limit=1,
        sort_order=rpc.RangeRequest.DESCEND,
        sort_target=rpc.RangeRequest.KEY,
    )
    response = await store.client.kvstub.Range(request, metadata=store.client.metadata)
    return parse_seal(bytes(response.kvs[0].value)) if response.kvs else None


async def _chain_head(store: EventStore) -> Seal | None:
    """The newest seal: in etcd, else the last one archived."""
    newest = await _newest_seal(store)
    if newest is not None:
        return newest
    segments, _ = await store.archived_segments()
    if segments and segments[-1].last_seal:
        return parse_seal(segments[-1].last_seal.encode())
    return None


async def seal_pending(
    store: EventStore,
    *,
    signer: SealSigner | None = None,
    block: int = 100,
    final: bool = False,
) -> int:
    """Seal every complete block of unsealed events (and a partial last one when
    `final`), signed by `signer` (unsigned without one: a lab). Blocks end on
    revision boundaries. Returns the number of new seals."""
    head = await _chain_head(store)
    prev = head.chain if head else GENESIS
    after = head.last_revision + 1 if head else 0
    events = await raw_events(store, after)
    new = 0
    seq = head.seq + 1 if head else 0
    i = 0
    while i < len(events):
        j = min(i + block, len(events))
        while j < len(events) and events[j][0] == events[j - 1][0]:
            j += 1  # never split one append
        if j - i < block and not final:
            break
        chunk = events[i:j]
        digests = tuple(_digest(k.encode(), v) for _, _, k, v in chunk)
        seal = Seal(
            seq=seq,
            first_revision=chunk[0][0],
            last_revision=chunk[-1][0],
            keys=tuple(k for _, _, k, _ in chunk),
            digests=digests,
            prev=prev,
            chain=_chain(prev, digests),
        )
        if signer is not None:
            seal = replace(seal, alg=ALGORITHM, key_id=signer.key_id)
            seal = replace(seal, sig=base64.b64encode(signer.sign(seal.body())).decode())
        tx = store.client.transactions
        ok, _ = await store._call(
            store.client.transaction(
                compare=[tx.create(_seal_key(store, seq)) == 0],
                success=[tx.put(_seal_key(store, seq), json.dumps(_as_dict(seal)).encode())],
                failure=[],
            ),
            operation="seal",
        )
        if not ok:
            break  # another sealer got there first
        prev, seq, i, new = seal.chain, seq + 1, j, new + 1
    return new


def _as_dict(seal: Seal) -> dict[str, object]:
    return {
        "seq": seal.seq,
        "first_revision": seal.first_revision,
        "last_revision": seal.last_revision,
        "keys": list(seal.keys),
        "digests": list(seal.digests),
        "prev": seal.prev,
        "chain": seal.chain,
        "alg": seal.alg,
        "key_id": seal.key_id,
        "sig": seal.sig,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    where: str  # "etcd" or "archive segment N (name)"
    seal: Seal
    stored: dict[str, tuple[int, bytes]]  # key -> (revision, stored value)


class _Unreadable(Exception):
    def __init__(self, where: str, why: str) -> None:
        super().__init__(why)
        self.where = where


async def _archived_blocks(store: EventStore, entry: IndexEntry) -> list[Block]:
    where = f"archive segment {entry.seq} ({entry.name} at {entry.location})"
    try:
        seal_records, event_records = await store.archived_records(entry)
        seals = [parse_seal(r.value) for r in seal_records]
    except (ArchiveError, ValueError, KeyError, TypeError) as exc:
        raise _Unreadable(where, str(exc)) from exc
    events = [(r.revision, 0, r.key, r.value) for r in event_records]
    return blocks_of(sorted(seals, key=lambda s: s.seq), events, where=where)


def blocks_of(
    seals: list[Seal], events: list[tuple[int, int, str, bytes]], *, where: str
) -> list[Block]:
    """Each seal with the stored events of its revision range (`events` in log
    order, as `raw_events` returns them)."""
    revisions = [e[0] for e in events]
    blocks = []
    for seal in seals:
        lo = bisect.bisect_left(revisions, seal.first_revision)
        hi = bisect.bisect_right(revisions, seal.last_revision)
        stored = {k: (r, v) for r, _, k, v in events[lo:hi]}
        blocks.append(Block(where=where, seal=seal, stored=stored))
    return blocks


async def _etcd_blocks(store: EventStore) -> list[Block]:
    seals = await load_seals(store)
    if not seals:
        return []
    events = await raw_events(store, seals[0].first_revision, to_revision=seals[-1].last_revision)
    return blocks_of(seals, events, where="etcd")


def check_signature(seal: Seal, keys: SealKeys) -> str:
    """ "" when the seal is signed by one of `keys`, else why not."""
    if not seal.sig:
        return f"seal {seal.seq} is not signed"
    if seal.alg != ALGORITHM:
        return f"seal {seal.seq} is signed with {seal.alg!r}, not {ALGORITHM}"
    try:
        signature = base64.b64decode(seal.sig, validate=True)
    except (binascii.Error, ValueError):
        return f"seal {seal.seq}: its signature is not base64"
    why = keys.check(key=seal.key_id, message=seal.body(), signature=signature)
    return f"seal {seal.seq} {why}" if why else ""


def check_block(block: Block, prev: str, keys: SealKeys | None = None) -> tuple[str, str, int]:
    """(problem, key, revision) of the first thing wrong in one sealed block;
    with `keys`, the seal must also carry a signature by one of them."""
    seal = block.seal
    if keys is not None:
        why = check_signature(seal, keys)
        if why:
            return why, "", 0
    if seal.prev != prev or _chain(prev, seal.digests) != seal.chain:
        return f"seal {seal.seq} does not chain to the one before", "", 0
    stored = dict(block.stored)
    for key, digest in zip(seal.keys, seal.digests, strict=True):
        if key not in stored:
            return "sealed event is missing", key, 0
        revision, value = stored.pop(key)
        if _digest(key.encode(), value) != digest:
            return "stored bytes do not match the seal", key, revision
    if stored:
        key, (revision, _) = next(iter(stored.items()))
        return "event inside a sealed range that the seal does not list", key, revision
    return "", "", 0


async def verify(store: EventStore, *, keys: SealKeys | None = None) -> VerifyResult:
    """Check every seal, archived ones first, then those in etcd; name the first
    problem and where it is (etcd or which archived segment). With `keys` (the
    trusted public seal keys) every seal must be signed by one of them: only
    then does a pass mean nobody rewrote the log; without, hashes only."""
    prev = GENESIS
    count = 0
    seals = 0
    keyed = keys is not None
    segments, _ = await store.archived_segments()

    def failed(problem: str, key: str = "", revision: int = 0) -> VerifyResult:
        return VerifyResult(
            ok=False,
            sealed_events=count,
            seals=seals,
            problem=problem,
            key=key,
            revision=revision,
            signed=seals if keyed else 0,
            keyed=keyed,
        )

    for entry in segments:
        try:
            blocks = await _archived_blocks(store, entry)
        except _Unreadable as exc:
            return failed(f"{exc.where}: {exc}")
        if not blocks or blocks[-1].seal.last_revision != entry.last_revision:
            return failed(f"{blocks[0].where if blocks else entry.name}: seals do not cover it")
        for block in blocks:
            problem, key, revision = check_block(block, prev, keys)
            if problem:
                return failed(f"{block.where}: {problem}", key, revision)
            prev, count, seals = block.seal.chain, count + len(block.seal.keys), seals + 1
    if segments:
        watermark = segments[-1].last_revision
        left = await raw_events(store, 0, to_revision=watermark, limit=1)
        if left:
            revision, _, key, _ = left[0]
            return failed(
                f"etcd holds an event at or below the archived revision {watermark}", key, revision
            )
    for block in await _etcd_blocks(store):
        problem, key, revision = check_block(block, prev, keys)
        if problem:
            return failed(
                problem if block.where == "etcd" else f"{block.where}: {problem}", key, revision
            )
        prev, count, seals = block.seal.chain, count + len(block.seal.keys), seals + 1
    return VerifyResult(
        ok=True, sealed_events=count, seals=seals, signed=seals if keyed else 0, keyed=keyed
    )
