"""The event log in etcd (aetcd): atomic, idempotent appends with per-object
optimistic concurrency, ordered reads, a resuming subscription, and snapshots of
the folded state.

Key layout (everything under `/corral/<cluster>/`, so one etcd holds several):
- `events/<event-id>`: write-once (create-if-absent), value `<index>\\n<json>` where
  index orders the events of one append; the etcd revision of the append is the
  global order, so appending the same id twice stores it once.
- `versions/<object-key>`: put once per append that touches the object; its etcd
  `version` is the object's version (the fold counts the same).
- `checkpoints/<revision>/`: the folded state at a revision (`events.lifecycle.checkpoints`).
- `archive/segments/<seq>`: where a sealed segment of old events went when its
  keys left etcd (`events.archive`, `events.lifecycle.retention`); `read_all` reads the
  archived segments first, transparently.
- `leader`: the leader's campaign key (`events.election`); its create revision is
  the leader's term, and an append made with `term=` compares it (a fencing token).
- `order/<seq>`, `order-next`, `order-legacy`: the order index each append writes
  with its events (`events.etcdlog.log_order`), which the read side (`events.etcdlog.log_reads`)
  pages the log by.

This module holds the write side and the connection; reads are in
`events.etcdlog.log_reads`, the errors in `events.etcdlog.store_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aetcd
import aetcd.exceptions as etcd_errors
from aetcd import rpc

from events.codec import encode
from events.etcd_client import (
    Endpoint,
    EtcdCredentials,
    EtcdPermissionDenied,
    diagnose_tls,
    make_client,
    parse_endpoint,
)
from events.etcdlog.append_groups import WaitingAppend, events_of, take_group
from events.etcdlog.log_order import (
    COUNTER,
    LEGACY,
    OrderCursor,
    encode_ids,
    order_key,
    parse_counter,
)
from events.etcdlog.log_reads import PAGE, LogReads
from events.etcdlog.store_errors import (
    RETRYABLE,
    ArchiveUnreadable,
    Compacted,
    CorruptRecord,
    EtcdUnavailable,
    NotLeader,
    VersionConflict,
    WriteNotConfirmed,
    channel_reset,
    denied,
    prefix_end,
)
from events.etcdlog.store_members import MemberMoves
from events.etcdlog.subscription import LogSubscription
from events.model import Event

# Names other modules import from here.
__all__ = [
    "PAGE",
    "ArchiveUnreadable",
    "Compacted",
    "CorruptRecord",
    "EtcdUnavailable",
    "EventStore",
    "NotLeader",
    "VersionConflict",
    "WriteNotConfirmed",
    "_prefix_end",
]
_prefix_end = prefix_end

if TYPE_CHECKING:  # imported where an archive is read: a log without one never is
    from events.archive import IndexEntry


class _LazyLog:
    """structlog imported on the first log line, not at import: a short-lived CLI
    process that only reads the log should not pay for it."""

    def __getattr__(self, name: str) -> Any:
        import structlog

        return getattr(structlog.get_logger("corral.store"), name)


log = _LazyLog()
T = TypeVar("T")

MAX_TXN_OPS = 120  # etcd's default --max-txn-ops is 128
# Records written and not yet read back kept at most (`EventStore._written`).
WRITTEN_KEPT = 20_000


# What etcd answers (through aetcd, as a plain ClientError) while it has no
# quorum or is electing a leader.
_NO_QUORUM = ("deadline exceeded", "request timed out", "no leader", "leader changed")


def _no_quorum(exc: BaseException) -> bool:
    return any(text in str(exc) for text in _NO_QUORUM)


def _why(exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {detail}"[:120] if detail else type(exc).__name__


@dataclass
class EventStore(LogReads, LogSubscription, MemberMoves):
    client: aetcd.Client
    cluster: str
    endpoint: str
    corrupt: list[CorruptRecord] = field(default_factory=list)
    # Called with (operation, seconds) after each etcd request made through
    # `_call` (the service feeds /metrics with it).
    on_request: Callable[[str, float], None] | None = None
    # Where to read archived objects instead of the location recorded with them
    # ($CORRAL_ARCHIVE: the same archive mounted elsewhere on this host).
    archive_override: str = ""
    _segments: dict[int, IndexEntry] = field(default_factory=dict)
    _segment_cache: dict[int, list[tuple[int, Event]]] = field(default_factory=dict)
    # The etcd user this store acts as (its certificate's CN), "" without one.
    identity: str = ""
    # Every member given, for moving to another one when the one in use fails
    # (aetcd's client talks to one address).
    members: tuple[Endpoint, ...] = ()
    credentials: EtcdCredentials | None = None
    timeout: float = 5.0
    _moving: asyncio.Task[bool] | None = None
    _moved_at: float = 0.0
    _closing: set[asyncio.Task[None]] = field(default_factory=set)
    # The release of the member first connected to ("3.4.23"), "" if unknown.
    server_version: str = ""
    # The records this store wrote, by key, until a read or the subscription
    # brings them back: a record that comes back byte for byte as written is
    # the event it was encoded from (every type decodes to what it was encoded
    # from, tests/unit/events), not decoded again. The leader's own appends
    # (its probes' reports, its steps) are most of what its subscription reads.
    _written: dict[bytes, tuple[bytes, int, Event]] = field(default_factory=dict)
    # The order index's counter as this store last saw it (None: not read yet),
    # and the lock that makes this store's appends take seqs one at a time (two
    # in flight would compare the same counter: one would fail and be sent again);
    # the appends waiting meanwhile go together (`events.etcdlog.append_groups`).
    _order: OrderCursor | None = None
    _append_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _waiting: list[WaitingAppend] = field(default_factory=list)

    # ------------------------------------------------------------------ keys

    @property
    def root(self) -> bytes:
        return f"/corral/{self.cluster}/".encode()

    @property
    def events_prefix(self) -> bytes:
        return self.root + b"events/"

    def event_key(self, event_id: str) -> bytes:
        return self.events_prefix + event_id.encode()

    def version_key(self, object_key: str) -> bytes:
        return self.root + b"versions/" + object_key.encode()

    @property
    def leader_key(self) -> bytes:
        return self.root + b"leader"

    # ------------------------------------------------------------------ connect

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        endpoints: Sequence[str],
        cluster: str,
        *,
        credentials: EtcdCredentials | None = None,
        timeout: float = 5.0,
    ) -> AsyncIterator[EventStore]:
        """Connect to the first endpoint that answers; EtcdUnavailable if none.
        `https://` endpoints (and bare HOST:PORT ones when `credentials` are
        given) use TLS with those credentials. EtcdConfigError for an endpoint or
        credential file that cannot work, EtcdPermissionDenied when the identity
        may not even read the cluster's prefix."""
        parsed = [parse_endpoint(e, tls=credentials is not None) for e in endpoints]
        identity = credentials.identity() if credentials is not None else ""
        last, tls_refused = "", False
        for endpoint in parsed:
            client = make_client(endpoint, credentials, timeout=timeout)
            try:
                await asyncio.wait_for(client.connect(), timeout)
                status = await asyncio.wait_for(client.status(), timeout)
                # Auth is checked per request: read one key of the cluster's
                # prefix now, so a user without a role fails here, clearly.
                await asyncio.wait_for(client.get(f"/corral/{cluster}/".encode()), timeout)
            except (TimeoutError, etcd_errors.ClientError, OSError) as exc:
                with contextlib.suppress(Exception):
                    await client.close()
                if isinstance(exc, etcd_errors.ClientError) and denied(exc):
                    raise EtcdPermissionDenied(
                        identity=identity, operation=f"reading /corral/{cluster}/", detail=str(exc)
                    ) from None
                last, tls_refused = type(exc).__name__, False
                if endpoint.secure and credentials is not None:
                    why = await diagnose_tls(endpoint, credentials)
                    if why.startswith("etcd"):
                        last, tls_refused = why, True
                continue
            store = cls(
                client=client,
                cluster=cluster,
                endpoint=endpoint.url,
                identity=identity,
                members=tuple(parsed),
                credentials=credentials,
                timeout=timeout,
                server_version=str(getattr(status, "version", "") or ""),
            )
            try:
                yield store
            finally:
                if store._moving is not None:
                    store._moving.cancel()
                with contextlib.suppress(Exception):
                    await store.client.close()
            return
        raise EtcdUnavailable(", ".join(e.url for e in parsed), last, tls_refused=tls_refused)

    # ------------------------------------------------------------------ append

    async def append(
        self,
        events: Sequence[Event],
        *,
        expected: Mapping[str, int] | None = None,
        term: int | None = None,
    ) -> int:
        """Append atomically; returns the etcd revision holding them. Events whose
        id is already stored are not stored again. `expected` maps object keys to
        the version the writer read; a mismatch raises VersionConflict and writes
        nothing. `term` (reactors pass theirs) must still be the leader key's
        create revision, else NotLeader and nothing is written."""
        if not events:
            raise ValueError("append needs at least one event")
        chunks = self._chunks(list(events))
        if expected and len(chunks) > 1:
            raise ValueError("an append with expected versions must fit one transaction")
        revision = 0
        for chunk in chunks:
            revision = await self._append_riding_elections(chunk, expected or {}, term)
        return revision

    async def _append_riding_elections(
        self, chunk: list[Event], expected: Mapping[str, int], term: int | None
    ) -> int:
        """One chunk, retried through an etcd election or a member's loss until twice
        the request timeout has passed (the ids make a retry of a write that did land
        harmless). A write sent to a follower in the second or so before it notices
        that the Raft leader died is forwarded to the dead leader and lost: etcd
        answers it only at the deadline, and the first retry may land in the
        election too. Without a quorum every retry fails: WriteNotConfirmed."""
        started = time.monotonic()
        while True:
            try:
                return await self._append_chunk(chunk, expected, term)
            except EtcdUnavailable:
                if time.monotonic() - started >= 2 * self.timeout:
                    raise
            await asyncio.sleep(0.5)
            if self._moving is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._moving)

    async def confirm_term(self, term: int) -> None:
        """NotLeader unless `term` still leads, read with a quorum (a transaction
        that compares and writes nothing); EtcdUnavailable without a quorum."""
        tx = self.client.transactions
        ok, _ = await self._call(
            self.client.transaction(
                compare=[tx.create(self.leader_key) == term], success=[], failure=[]
            ),
            operation="term",
        )
        if not ok:
            raise NotLeader(term, await self._leader_term())

    async def _leader_term(self) -> int:
        got: Any = await self._call(self.client.get(self.leader_key))
        return int(got.create_revision) if got else 0

    def transactions_for(
        self, events: Sequence[Event], *, expected: Mapping[str, int]
    ) -> list[tuple[list[Event], dict[str, int]]]:
        """Split a large append into transactions that fit etcd's per-transaction
        operation limit, each carrying the expected versions of its own objects.
        For callers (such as `corral apply`) whose appends may exceed one
        transaction and that can be re-run safely when a later one conflicts."""
        out = []
        for chunk in self._chunks(list(events)):
            keys = {k for e in chunk for k in e.objects()}
            out.append((chunk, {k: v for k, v in expected.items() if k in keys}))
        unclaimed = set(expected) - {k for _, exp in out for k in exp}
        if unclaimed and out:
            out[0][1].update({k: expected[k] for k in unclaimed})
        return out

    def _chunks(self, events: list[Event]) -> list[list[Event]]:
        chunks: list[list[Event]] = []
        current: list[Event] = []
        keys: set[str] = set()
        for event in events:
            new_keys = set(event.objects()) - keys
            if current and len(current) + len(keys) + 1 + len(new_keys) > MAX_TXN_OPS:
                chunks.append(current)
                current, keys = [], set()
                new_keys = set(event.objects())
            current.append(event)
            keys |= new_keys
        if current:
            chunks.append(current)
        return chunks

    async def _append_chunk(
        self, events: list[Event], expected: Mapping[str, int], term: int | None
    ) -> int:
        if expected:
            async with self._append_lock:
                return await self._append_indexed(events, expected, term)
        mine = WaitingAppend(
            events=tuple(events), term=term, done=asyncio.get_running_loop().create_future()
        )
        self._waiting.append(mine)
        try:
            async with self._append_lock:
                if mine.done.done():  # sent with an earlier caller's group
                    return mine.done.result()
                return await self._send_group(mine)
        finally:
            if mine in self._waiting:
                self._waiting.remove(mine)
            if mine.done.done() and not mine.done.cancelled():
                mine.done.exception()  # retrieved, also by a caller cancelled meanwhile

    async def _send_group(self, mine: WaitingAppend) -> int:
        group = take_group(self._waiting, mine, max_ops=MAX_TXN_OPS)
        try:
            revision = await self._append_indexed(events_of(group), {}, mine.term)
        except Exception as exc:
            for entry in group[1:]:
                entry.done.set_exception(exc)  # each caller's own retry decides
            raise
        except BaseException:
            self._waiting[:0] = group[1:]  # cancelled: the next turn sends them
            raise
        for entry in group[1:]:
            entry.done.set_result(revision)
        return revision

    async def _append_indexed(
        self, events: list[Event], expected: Mapping[str, int], term: int | None
    ) -> int:
        """One transaction: the events (each create-if-absent), the versions of the
        objects they touch, and the order index's entry for them (`order/<seq>`
        and `order-next`, guarded by the counter's mod revision). Its failure
        branch reads the counter and the events' keys, so the cause is known
        without another request: the events already stored (an idempotent
        retry), another writer's append taking the seq (sent again at once), or
        a stale version or leader term."""
        tx = self.client.transactions
        legacy = False
        order = self._order
        if order is None:
            order, legacy = await self._read_counter()
        objects = sorted({k for e in events for k in e.objects()} | set(expected))
        compare = [tx.create(self.event_key(e.id)) == 0 for e in events]
        compare += [tx.version(self.version_key(k)) == v for k, v in sorted(expected.items())]
        if term is not None:
            compare.append(tx.create(self.leader_key) == term)
        compare.append(tx.mod(self.root + COUNTER) == order.mod_revision)
        records = [(self.event_key(e.id), b"%d\n" % i + encode(e)) for i, e in enumerate(events)]
        ops = [tx.put(record_key, value) for record_key, value in records]
        if len(self._written) + len(records) > WRITTEN_KEPT:
            self._written.clear()  # never read back (an append that failed): decode
        for i, (record_key, value) in enumerate(records):
            self._written[record_key] = (value, i, events[i])
        marker = events[0].id.encode()
        ops += [tx.put(self.version_key(k), marker) for k in objects if k in _touched(events)]
        ops.append(tx.put(order_key(self.root, order.seq), encode_ids([e.id for e in events])))
        ops.append(tx.put(self.root + COUNTER, b"%d" % (order.seq + 1)))
        if not order.mod_revision and legacy:
            ops.append(tx.put(self.root + LEGACY, b"events below order-next's revision"))
        failure = [tx.get(self.root + COUNTER)] + [tx.get(self.event_key(e.id)) for e in events]
        succeeded, responses = await self._call(
            self.client.transaction(compare=compare, success=ops, failure=failure),
            operation="append",
        )
        if succeeded:
            # The revision of the writes comes with the answer (each put's header):
            # asking etcd for it again was a second request per append.
            revision = _put_revision(responses) or await self._revision_of(events[0].id)
            self._order = OrderCursor(seq=order.seq + 1, mod_revision=revision)
            return revision
        self._order = _cursor(responses[0])
        stored = [int(got[0][1].create_revision) if got else 0 for got in responses[1:]]
        missing = [e for e, rev in zip(events, stored, strict=True) if not rev]
        if not missing:  # one transaction stores all of its events or none
            return max(stored)
        if self._order != order:
            return await self._append_indexed(missing, expected, term)
        if term is not None:
            current = await self._leader_term()
            if current != term:
                raise NotLeader(term, current)
        for key, want in sorted(expected.items()):
            actual = await self._version(key)
            if actual != want:
                raise VersionConflict(key, want, actual)
        return await self._append_indexed(missing, expected, term)

    async def _read_counter(self) -> tuple[OrderCursor, bool]:
        """The order index's counter and whether any event is stored yet, in one
        read-only transaction (a count: etcd reads no value for it), made at a
        store's first append."""
        counter = rpc.RangeRequest(key=self.root + COUNTER)
        count = rpc.RangeRequest(
            key=self.events_prefix, range_end=prefix_end(self.events_prefix), count_only=True
        )
        request = rpc.TxnRequest(
            success=[rpc.RequestOp(request_range=counter), rpc.RequestOp(request_range=count)]
        )
        response: Any = await self._call(
            self.client.kvstub.Txn(
                request, timeout=self.client._timeout, metadata=self.client.metadata
            ),
            operation="order",
        )
        got, counted = (r.response_range for r in response.responses)
        stored = int(counted.count) > 0
        if not got.kvs:
            return OrderCursor(seq=0, mod_revision=0), stored
        kv = got.kvs[0]
        cursor = OrderCursor(seq=parse_counter(bytes(kv.value)), mod_revision=int(kv.mod_revision))
        return cursor, stored

    async def _version(self, key: str) -> int:
        got: Any = await self._call(self.client.get(self.version_key(key)))
        return int(got.version) if got else 0

    async def _revision_of(self, event_id: str) -> int:
        got: Any = await self._call(self.client.get(self.event_key(event_id)))
        return int(got.create_revision) if got else 0

    async def _call(self, awaitable: Awaitable[T], *, operation: str = "get") -> T:
        started = time.monotonic()
        try:
            try:
                return await awaitable
            except rpc.AioRpcError as raw:  # a raw stub call: aetcd's mapping
                etcd_errors._handle_exception(raw)
                raise
        except asyncio.CancelledError as exc:
            if not channel_reset():
                raise
            raise self._unavailable(operation, "the connection was reset") from exc
        except RETRYABLE as exc:
            self.trouble()
            raise self._unavailable(operation, _why(exc)) from exc
        except etcd_errors.ClientError as exc:
            if denied(exc):
                raise EtcdPermissionDenied(
                    identity=self.identity, operation=operation, detail=str(exc)
                ) from None
            if _no_quorum(exc):
                self.trouble()
                raise self._unavailable(operation, _why(exc)) from exc
            raise
        finally:
            if self.on_request is not None:
                self.on_request(operation, time.monotonic() - started)

    def _unavailable(self, operation: str, detail: str) -> EtcdUnavailable:
        if operation in ("append", "campaign", "lease"):
            return WriteNotConfirmed(self.endpoint, detail)
        return EtcdUnavailable(self.endpoint, detail)

    def another(self) -> contextlib.AbstractAsyncContextManager[EventStore]:
        """A connection of its own to the same etcd as the same identity (for work
        on an event loop of its own, `orchestrator.offloop.in_own_loop`)."""
        urls = [m.url for m in self.members] or [self.endpoint]
        return EventStore.connect(
            urls, self.cluster, credentials=self.credentials, timeout=self.timeout
        )

    # ------------------------------------------------------------------ compaction

    async def compact(self, revision: int) -> None:
        await self._call(self.client.compact(revision, physical=True))


def _cursor(got: Any) -> OrderCursor:
    """The counter from a transaction's range answer (aetcd: (value, kv) pairs)."""
    if not got:
        return OrderCursor(seq=0, mod_revision=0)
    value, kv = got[0]
    return OrderCursor(seq=parse_counter(bytes(value)), mod_revision=int(kv.mod_revision))


def _touched(events: Sequence[Event]) -> set[str]:
    return {k for e in events for k in e.objects()}


def _put_revision(responses: Sequence[Any]) -> int:
    """The revision a successful append's puts were written at, from the first
    put's response in the transaction's answer; 0 if the answer does not say."""
    for response in responses:
        if response.WhichOneof("response") == "response_put":
            return int(response.response_put.header.revision)
    return 0
