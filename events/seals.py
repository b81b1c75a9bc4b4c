"""Audit seals: a tamper-evident chain over the stored event log. Every block of
events (in log order) is sealed with the digest of each event's stored bytes and a
running hash chained to the previous seal, under `/corral/<cluster>/seals/<seq>`.
`verify` re-reads the log and names the first event whose bytes no longer match,
or an event missing from or added to a sealed block.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    ok: bool
    sealed_events: int
    seals: int
    problem: str = ""
    key: str = ""
    revision: int = 0


def _digest(key: bytes, value: bytes) -> str:
    return hashlib.sha256(key + b"\0" + value).hexdigest()


def _chain(prev: str, digests: tuple[str, ...]) -> str:
    h = hashlib.sha256(prev.encode())
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()


async def _raw_events(store: EventStore, from_revision: int) -> list[tuple[int, int, str, bytes]]:
    """(revision, batch index, key, stored value) in log order."""
    from aetcd import rpc

    out = []
    start, end = store.events_prefix, _prefix_end(store.events_prefix)
    request = rpc.RangeRequest(
        key=start,
        range_end=end,
        sort_order=rpc.RangeRequest.ASCEND,
        sort_target=rpc.RangeRequest.CREATE,
        min_create_revision=max(from_revision, 0),
    )
    response = await store.client.kvstub.Range(request, metadata=store.client.metadata)
    for kv in response.kvs:
        head = bytes(kv.value).partition(b"\n")[0]
        index = int(head) if head.isdigit() else 0
        out.append((int(kv.create_revision), index, bytes(kv.key).decode(), bytes(kv.value)))
    out.sort(key=lambda t: (t[0], t[1], t[2]))
    return out


def _seal_key(store: EventStore, seq: int) -> bytes:
    return store.root + b"seals/%012d" % seq


async def load_seals(store: EventStore) -> list[Seal]:
    prefix = store.root + b"seals/"
    got = await store.client.get_prefix(prefix)
    seals = []
    for kv in got:
        doc = json.loads(bytes(kv.value))
        seals.append(
            Seal(
                seq=doc["seq"],
                first_revision=doc["first_revision"],
                last_revision=doc["last_revision"],
                keys=tuple(doc["keys"]),
                digests=tuple(doc["digests"]),
                prev=doc["prev"],
                chain=doc["chain"],
            )
        )
    return sorted(seals, key=lambda s: s.seq)


async def seal_pending(store: EventStore, *, block: int = 100, final: bool = False) -> int:
    """Seal every complete block of unsealed events (and a partial last one when
    `final`). Blocks end on revision boundaries. Returns the number of new seals."""
    seals = await load_seals(store)
    prev = seals[-1].chain if seals else GENESIS
    after = seals[-1].last_revision + 1 if seals else 0
    events = await _raw_events(store, after)
    new = 0
    seq = seals[-1].seq + 1 if seals else 0
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
        tx = store.client.transactions
        ok, _ = await store.client.transaction(
            compare=[tx.create(_seal_key(store, seq)) == 0],
            success=[tx.put(_seal_key(store, seq), json.dumps(_as_dict(seal)).encode())],
            failure=[],
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
    }


async def verify(store: EventStore) -> VerifyResult:
    seals = await load_seals(store)
    prev = GENESIS
    count = 0
    for seal in seals:
        if seal.prev != prev or _chain(prev, seal.digests) != seal.chain:
            return VerifyResult(
                ok=False,
                sealed_events=count,
                seals=len(seals),
                problem=f"seal {seal.seq} does not chain to the one before",
            )
        events = await _raw_events(store, seal.first_revision)
        block = [e for e in events if e[0] <= seal.last_revision]
        stored = {k: (r, v) for r, _, k, v in block}
        for key, digest in zip(seal.keys, seal.digests, strict=True):
            if key not in stored:
                return VerifyResult(
                    ok=False,
                    sealed_events=count,
                    seals=len(seals),
                    problem="sealed event is missing",
                    key=key,
                )
            revision, value = stored.pop(key)
            if _digest(key.encode(), value) != digest:
                return VerifyResult(
                    ok=False,
                    sealed_events=count,
                    seals=len(seals),
                    problem="stored bytes do not match the seal",
                    key=key,
                    revision=revision,
                )
            count += 1
        if stored:
            key, (revision, _) = next(iter(stored.items()))
            return VerifyResult(
                ok=False,
                sealed_events=count,
                seals=len(seals),
                problem="event inside a sealed range that the seal does not list",
                key=key,
                revision=revision,
            )
        prev = seal.chain
    return VerifyResult(ok=True, sealed_events=count, seals=len(seals))
