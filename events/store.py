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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aetcd
import aetcd.exceptions as etcd_errors
from aetcd import rpc

from events.codec import CorruptEvent, decode, encode, undecodable
from events.etcd_client import (
    Endpoint,
    EtcdCredentials,
    EtcdPermissionDenied,
    diagnose_tls,
    make_client,
    parse_endpoint,
)
from events.model import Event

if TYPE_CHECKING:  # imported where an archive is read: a log without one never is
    from events.archive import IndexEntry, RawRecord


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
PAGE = 1000
RETRYABLE = (
    etcd_errors.ConnectionFailedError,
    etcd_errors.ConnectionTimeoutError,
    etcd_errors.InternalError,
)


class EtcdUnavailable(Exception):
    """etcd did not answer; str() is one line naming the endpoint and what to do."""

    def __init__(self, endpoint: str, detail: str = "", *, tls_refused: bool = False) -> None:
        self.endpoint = endpoint
        if tls_refused:  # it answered: the certificates are the problem
            super().__init__(f"etcd at {endpoint}: {detail}")
            return
        super().__init__(
            f"etcd at {endpoint} is not reachable{': ' + detail if detail else ''} "
            "(start it, or point corral at a running one with --etcd HOST:PORT "
            "or $CORRAL_ETCD; a cluster answers only while a majority of its "
            "members is up)"
        )


class WriteNotConfirmed(EtcdUnavailable):
    """A write etcd did not confirm in time: no quorum (a majority of its members
    down or cut off), or no member reachable. Nothing is acknowledged; the same
    write retried later is stored once (event ids are write-once)."""

    def __init__(self, endpoint: str, detail: str = "") -> None:
        Exception.__init__(
            self,
            f"etcd at {endpoint} did not confirm the write ({detail or 'no answer'}): "
            "it has no quorum or cannot be reached; nothing was acknowledged: retry "
            "once a majority of etcd's members is up (a retry is stored once)",
        )
        self.endpoint = endpoint


class ArchiveUnreadable(Exception):
    """Events the log needs are in an archived segment that cannot be read."""

    def __init__(self, entry: IndexEntry, detail: str) -> None:
        self.entry = entry
        super().__init__(
            f"events at revisions {entry.first_revision}-{entry.last_revision} are archived "
            f"in {entry.name} at {entry.location}: {detail}"
        )


class _Compacted(Exception):
    def __init__(self, resume_at: int) -> None:
        self.resume_at = resume_at


class VersionConflict(Exception):
    """A stale writer: the object changed since the version it expected."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        self.key, self.expected, self.actual = key, expected, actual
        super().__init__(f"{key} is at version {actual}, not {expected}: re-read and retry")


class NotLeader(Exception):
    """A guarded append refused: the leader key's create revision is no longer the
    writer's term (a newer leader was elected, or the key expired)."""

    def __init__(self, term: int, current: int) -> None:
        self.term, self.current = term, current
        now = f"term {current} leads now" if current else "no leader holds the key now"
        super().__init__(f"not the leader: this orchestrator's term {term} ended ({now})")


@dataclass(frozen=True, slots=True, kw_only=True)
class CorruptRecord:
    key: str
    revision: int
    why: str


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


async def _close_within(client: aetcd.Client, seconds: float) -> None:
    """Close `client`, giving up after `seconds` (a hung close is abandoned)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), seconds)


def _channel_reset() -> bool:
    """A CancelledError that is not this task being cancelled: gRPC cancels the
    calls of a channel closed under them (the store moving to another member, a
    resubscription). A read of the log cut short so was a CancelledError that
    ended the subscription's pump for good: the fold stopped without an error
    (make chaos seed 0). It is EtcdUnavailable, which readers retry."""
    task = asyncio.current_task()
    return task is not None and not task.cancelling()


def _denied(exc: BaseException) -> bool:
    return "permission denied" in str(exc) or "user name not found" in str(exc)


# What etcd answers (through aetcd, as a plain ClientError) while it has no
# quorum or is electing a leader.
_NO_QUORUM = ("deadline exceeded", "request timed out", "no leader", "leader changed")


def _no_quorum(exc: BaseException) -> bool:
    return any(text in str(exc) for text in _NO_QUORUM)


def _why(exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {detail}"[:120] if detail else type(exc).__name__


@dataclass
class EventStore:
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
                if isinstance(exc, etcd_errors.ClientError) and _denied(exc):
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
        tx = self.client.transactions
        objects = sorted({k for e in events for k in e.objects()} | set(expected))
        compare = [tx.create(self.event_key(e.id)) == 0 for e in events]
        compare += [tx.version(self.version_key(k)) == v for k, v in sorted(expected.items())]
        if term is not None:
            compare.append(tx.create(self.leader_key) == term)
        records = [(self.event_key(e.id), b"%d\n" % i + encode(e)) for i, e in enumerate(events)]
        ops = [tx.put(record_key, value) for record_key, value in records]
        if len(self._written) + len(records) > WRITTEN_KEPT:
            self._written.clear()  # never read back (an append that failed): decode
        for i, (record_key, value) in enumerate(records):
            self._written[record_key] = (value, i, events[i])
        marker = events[0].id.encode()
        ops += [tx.put(self.version_key(k), marker) for k in objects if k in _touched(events)]
        succeeded, responses = await self._call(
            self.client.transaction(compare=compare, success=ops, failure=[]), operation="append"
        )
        if succeeded:
            # The revision of the writes comes with the answer (each put's header):
            # asking etcd for it again was a second request per append.
            return _put_revision(responses) or await self._revision_of(events[0].id)
        # Find out why: ids already stored (an idempotent retry: one transaction
        # stores all of its events or none), a newer leader, or a stale version.
        missing = []
        revision = 0
        for e in events:
            rev = await self._revision_of(e.id)
            if rev:
                revision = max(revision, rev)
            else:
                missing.append(e)
        if not missing:
            return revision
        if term is not None:
            current = await self._leader_term()
            if current != term:
                raise NotLeader(term, current)
        for key, want in sorted(expected.items()):
            actual = await self._version(key)
            if actual != want:
                raise VersionConflict(key, want, actual)
        return await self._append_chunk(missing, expected, term)

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
            if not _channel_reset():
                raise
            raise self._unavailable(operation, "the connection was reset") from exc
        except RETRYABLE as exc:
            self.trouble()
            raise self._unavailable(operation, _why(exc)) from exc
        except etcd_errors.ClientError as exc:
            if _denied(exc):
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
            log.warning("etcd member changed", now=member.url)
            # Closed aside, under a deadline: closing a client whose member hangs
            # can wait forever inside aetcd (its watcher's full request queue),
            # and every writer and subscriber waits for this move to end.
            closing = asyncio.get_running_loop().create_task(_close_within(old, self.timeout))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            return True
        return False

    # ------------------------------------------------------------------ read

    async def read_all(
        self, *, from_revision: int = 0, known: frozenset[str] = frozenset()
    ) -> AsyncIterator[tuple[int, Event]]:
        """Every event with revision >= from_revision, in order: archived segments
        first, then etcd, read as of one revision so that an archiving pass
        deleting keys meanwhile hides nothing (a compaction under the read makes
        it start again from where it was). Events of `from_revision` itself whose
        ids are `known` (a checkpoint holds them) are not even decoded. Corrupt
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
                async for revision, event in self._read_etcd(next_rev, pinned, skip):
                    next_rev = revision
                    yield revision, event
                return
            except _Compacted as exc:
                next_rev = max(next_rev, exc.resume_at)
                log.info("log compacted under a read; reading on", revision=next_rev)

    async def _read_etcd(
        self, from_revision: int, pinned: int, known: frozenset[str] = frozenset()
    ) -> AsyncIterator[tuple[int, Event]]:
        prefix = len(self.events_prefix)
        async for kvs in self.event_pages(from_revision, pinned=pinned):
            if known:
                kvs = [
                    kv
                    for kv in kvs
                    if kv.create_revision != from_revision
                    or bytes(kv.key)[prefix:].decode(errors="replace") not in known
                ]
            for revision, event in self._decode_group(kvs):
                yield revision, event

    async def event_pages(
        self, from_revision: int, *, pinned: int = 0, to_revision: int = 0
    ) -> AsyncGenerator[list[Any], None]:
        """The stored event records with revision >= from_revision (and <=
        to_revision when given), a page of whole revisions at a time, in
        revision order, as of revision `pinned` (0: the newest). A page cut
        inside a revision ends before it, unless that revision fills the page."""
        start = self.events_prefix
        end = _prefix_end(self.events_prefix)
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
            try:
                response = await self.client.kvstub.Range(
                    request, timeout=self.client._timeout, metadata=self.client.metadata
                )
            except asyncio.CancelledError as exc:
                if not _channel_reset():
                    raise
                raise EtcdUnavailable(self.endpoint, "the connection was reset") from exc
            except Exception as exc:
                if "compacted" in str(exc):
                    raise _Compacted(min_rev) from exc
                if _denied(exc):
                    raise EtcdPermissionDenied(
                        identity=self.identity, operation="reading the log", detail=str(exc)
                    ) from None
                raise EtcdUnavailable(self.endpoint, type(exc).__name__) from exc
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

    async def ids_at(self, revision: int) -> frozenset[str]:
        """The ids of the events appended at `revision` (their keys only)."""
        request = rpc.RangeRequest(
            key=self.events_prefix,
            range_end=_prefix_end(self.events_prefix),
            keys_only=True,
            min_create_revision=revision,
            max_create_revision=revision,
        )
        response: Any = await self._call(
            self.client.kvstub.Range(
                request, timeout=self.client._timeout, metadata=self.client.metadata
            )
        )
        prefix = len(self.events_prefix)
        return frozenset(bytes(kv.key)[prefix:].decode(errors="replace") for kv in response.kvs)

    async def archived_segments(self) -> tuple[list[IndexEntry], int]:
        """The archive's segments, oldest first, and the etcd revision this list
        is current at (entries never change once written: only new ones are read)."""
        prefix = self.root + b"archive/segments/"
        after = max(self._segments, default=-1) + 1
        request = rpc.RangeRequest(key=prefix + b"%012d" % after, range_end=_prefix_end(prefix))
        try:
            response = await self.client.kvstub.Range(
                request, timeout=self.client._timeout, metadata=self.client.metadata
            )
        except asyncio.CancelledError as exc:
            if not _channel_reset():
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
                log.warning("corrupt archived event skipped", key=record.key, why=str(exc))
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
                log.warning("corrupt event skipped", key=key, revision=revision, why=str(exc))
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

    async def read_object(self, object_key: str) -> list[tuple[int, Event]]:
        """One object's events, in order (a scan: the log is the index)."""
        return [(r, e) async for r, e in self.read_all() if object_key in e.objects()]

    async def current_revision(self) -> int:
        """etcd's head revision, from a count-only read of the cluster's prefix
        (no values travel)."""
        request = rpc.RangeRequest(key=self.root, range_end=_prefix_end(self.root), count_only=True)
        response = await self._call(
            self.client.kvstub.Range(
                request, timeout=self.client._timeout, metadata=self.client.metadata
            )
        )
        return int(response.header.revision)

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
                    range_end=_prefix_end(self.events_prefix),
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
                log.info("watch revision compacted; catching up by range read", revision=next_rev)
                continue
            except (EtcdUnavailable, *RETRYABLE, etcd_errors.ClientError, OSError) as exc:
                log.warning("event subscription interrupted; resuming", error=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if not await self.move_to_healthy_member():
                    await _close_within(self.client, self.timeout)
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

    # ------------------------------------------------------------------ compaction

    async def compact(self, revision: int) -> None:
        await self._call(self.client.compact(revision, physical=True))


def _touched(events: Sequence[Event]) -> set[str]:
    return {k for e in events for k in e.objects()}


def _put_revision(responses: Sequence[Any]) -> int:
    """The revision a successful append's puts were written at, from the first
    put's response in the transaction's answer; 0 if the answer does not say."""
    for response in responses:
        if response.WhichOneof("response") == "response_put":
            return int(response.response_put.header.revision)
    return 0
