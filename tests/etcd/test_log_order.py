"""The log's order index against a real etcd: each append lists its events under
the next seq, in revision order, with no gap or duplicate even when stores append
concurrently; the reader pages the log by key through it (no request sorted or
filtered by revision, which etcd 3.4 answers by reading the whole log); a log
written before the index is read the same as one with it; a compaction under a
read is read through; retention deletes the index entries it archives."""

from __future__ import annotations

import asyncio
from typing import Any

from devtools.local_etcd import LocalEtcd
from events.etcdlog.log_order import COUNTER, LEGACY, ORDER_DIR, decode_ids
from events.etcdlog.log_reads import ORDER_PAGE, PAGE
from events.etcdlog.store_errors import prefix_end
from events.lifecycle.checkpoints import save_checkpoint
from events.lifecycle.retention import RetentionPolicy, archive_pass
from events.lifecycle.seals import seal_pending, verify
from events.model import Event
from events.projection import fold
from events.state import ClusterState
from events.store import EventStore
from tests.support.cluster.events import ev


async def order_entries(store: EventStore) -> list[tuple[int, int, list[str]]]:
    """(seq, create revision, ids) of every order key, in key order."""
    prefix = store.root + ORDER_DIR
    got = await store.client.get_range(prefix, prefix_end(prefix))
    return [
        (int(bytes(kv.key)[len(prefix) :]), kv.create_revision, decode_ids(bytes(kv.value)))
        for kv in got
    ]


async def read(store: EventStore, **kwargs: Any) -> list[tuple[int, str]]:
    return [(r, e.id) async for r, e in store.read_all(**kwargs)]


async def test_each_append_is_listed_under_the_next_seq_in_revision_order(
    etcd: LocalEtcd,
) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        sent: list[Event] = []
        for n in (1, 7, 300, 2):  # 300: an append of several transactions
            batch = [ev(len(sent) + i) for i in range(n)]
            await store.append(batch)
            sent += batch
        entries = await order_entries(store)
        assert [seq for seq, _, _ in entries] == list(range(len(entries)))
        revisions = [rev for _, rev, _ in entries]
        assert revisions == sorted(set(revisions))  # one entry per revision, increasing
        assert [i for _, _, ids in entries for i in ids] == [e.id for e in sent]
        got = await read(store)
        assert [i for _, i in got] == [e.id for e in sent]
        by_rev = {rev: ids for _, rev, ids in entries}
        for rev, ids in by_rev.items():
            assert await store.ids_at(rev) == frozenset(ids)
            assert [i for r, i in got if r == rev] == ids
        # From the middle, and with the events of that revision a checkpoint
        # already holds left out.
        middle = revisions[2]
        assert await read(store, from_revision=middle) == [(r, i) for r, i in got if r >= middle]
        known = frozenset(by_rev[middle][:3])
        assert await read(store, from_revision=middle, known=known) == [
            (r, i) for r, i in got if r >= middle and i not in known
        ]
        counter = await store.client.get(store.root + COUNTER)
        assert counter is not None and int(counter.value) == len(entries)


async def test_two_stores_appending_at_once_leave_no_gap_or_duplicate(etcd: LocalEtcd) -> None:
    connect = [etcd.endpoint], "c1"
    async with (
        EventStore.connect(*connect, credentials=etcd.credentials()) as one,
        EventStore.connect(*connect, credentials=etcd.credentials()) as two,
    ):

        async def writer(store: EventStore, base: int) -> list[str]:
            batches = [[ev(base + 10 * b + i) for i in range(1 + b % 3)] for b in range(40)]
            # Several appends in flight on each store too.
            await asyncio.gather(*(store.append(batch) for batch in batches))
            return [e.id for batch in batches for e in batch]

        ids_one, ids_two = await asyncio.gather(writer(one, 0), writer(two, 10_000))
        entries = await order_entries(one)
        # Appends waiting on their store's turn go together (group commit): fewer
        # transactions than appends, never a gap in the seqs.
        assert 2 <= len(entries) <= 80
        assert [seq for seq, _, _ in entries] == list(range(len(entries)))
        revisions = [rev for _, rev, _ in entries]
        assert revisions == sorted(set(revisions))
        listed = [i for _, _, ids in entries for i in ids]
        assert sorted(listed) == sorted(ids_one + ids_two)  # each once
        got = await read(two)
        assert [i for _, i in got] == listed
        assert [r for r, _ in got] == sorted(r for r, _ in got)
        # Both stores append on after the race with what they learnt of the counter.
        await one.append([ev(99_998)])
        await two.append([ev(99_999)])
        after = len(entries) + 2
        assert [seq for seq, _, _ in await order_entries(one)] == list(range(after))


class RecordingStub:
    """etcd's KV stub, every range request sent through it (also those inside a
    transaction) kept in `ranges`."""

    def __init__(self, stub: Any) -> None:
        self.stub = stub
        self.ranges: list[Any] = []

    def Range(self, request: Any, **kwargs: Any) -> Any:
        self.ranges.append(request)
        return self.stub.Range(request, **kwargs)

    def Txn(self, request: Any, **kwargs: Any) -> Any:
        self.ranges += [op.request_range for op in request.success if op.HasField("request_range")]
        return self.stub.Txn(request, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stub, name)


async def test_a_page_is_read_by_key_without_a_sort_or_revision_filter(etcd: LocalEtcd) -> None:
    """What makes a page cost the page: etcd 3.4 reads every key of a Range that
    is sorted or filtered by revision, and only limit + 1 of one that is not."""
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        for b in range(60):
            await store.append([ev(50 * b + i) for i in range(50)])
        head = await store.current_revision()
        recorder = RecordingStub(store.client.kvstub)
        store.client.kvstub = recorder
        got = []
        async for item in store.read_all(from_revision=head - 30):
            got.append(item)
        assert len(got) == 50 * 31
        assert recorder.ranges
        for request in recorder.ranges:
            assert request.sort_order == 0 and request.sort_target == 0
            assert not (request.min_create_revision or request.max_create_revision)
            assert not (request.min_mod_revision or request.max_mod_revision)
            # A range over the log or its index has a limit, or only counts (the
            # archive's index is read whole: its new entries, a few a day).
            if not request.key.startswith(store.root + b"archive/"):
                assert not request.range_end or request.limit or request.count_only
            assert request.limit <= ORDER_PAGE
        # etcd 3.4 walks its key index over the whole range asked for, whatever
        # the limit: the order index is read in windows of seqs (the one open
        # range finds the index's first key, once per read).
        order = store.root + ORDER_DIR
        open_ranges = [r for r in recorder.ranges if r.range_end == prefix_end(order)]
        assert len(open_ranges) == 1 and open_ranges[0].limit == 1
        # About a page's worth of point reads, not a read per event kept.
        events_prefix = store.events_prefix
        point_reads = [r for r in recorder.ranges if r.key.startswith(events_prefix)]
        assert len(point_reads) == len(got)
        recorder.ranges.clear()
        assert len(await store.ids_at(head - 10)) == 50
        assert len(recorder.ranges) < 12 and all(r.sort_order == 0 for r in recorder.ranges)
        store.client.kvstub = recorder.stub


async def test_a_log_older_than_the_index_reads_the_same(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        for b in range(30):
            await store.append([ev(10 * b + i) for i in range(1 + b % 4)])
        indexed = await read(store)
        # The same log as a store without the index wrote it.
        await store.client.delete_range(store.root + b"order", prefix_end(store.root + b"order"))
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as old:
        assert await order_entries(old) == []
        assert await read(old) == indexed
        middle = indexed[len(indexed) // 2][0]
        assert await read(old, from_revision=middle) == [x for x in indexed if x[0] >= middle]
        assert await old.ids_at(middle) == {i for r, i in indexed if r == middle}
        # Appending now starts the index, marked as following older events.
        more = [ev(1000 + i) for i in range(PAGE + 5)]  # more than a page
        await old.append(more)
        assert await old.client.get(old.root + LEGACY) is not None
        got = await read(old)
        assert got[: len(indexed)] == indexed
        assert [i for _, i in got[len(indexed) :]] == [e.id for e in more]
        assert await read(old, from_revision=middle) == [x for x in got if x[0] >= middle]
        assert not old.corrupt


async def test_a_compaction_under_a_read_is_read_through(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        sent = []
        for b in range(50):
            batch = [ev(50 * b + i) for i in range(50)]
            await store.append(batch)
            sent += batch
        got = []
        async for _, event in store.read_all():
            got.append(event.id)
            if len(got) == 100:  # the first page is read: compact under the rest
                await store.compact(await store.current_revision())
        assert got == [e.id for e in sent]


async def test_retention_deletes_the_index_entries_it_archives(
    etcd: LocalEtcd, tmp_path: Any
) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        sent = []
        for b in range(60):
            batch = [ev(10 * b + i) for i in range(10)]
            await store.append(batch)
            sent += batch
        await save_checkpoint(store, fold(ClusterState(), [x async for x in store.read_all()]))
        await seal_pending(store, block=100, final=True)
        policy = RetentionPolicy(url=tmp_path.as_uri(), keep_events=150, min_segment_events=100)
        done = await archive_pass(store, policy)
        assert done is not None
        entries = await order_entries(store)
        assert entries and all(rev > done.segment.last_revision for _, rev, _ in entries)
        assert entries[0][0] == done.segment.events // 10  # the seqs after the archived ones
        assert [i for _, i in await read(store)] == [e.id for e in sent]
        assert (await verify(store)).ok
        later = [ev(9000 + i) for i in range(3)]
        await store.append(later)
        assert [i for _, i in await read(store)] == [e.id for e in sent + later]


async def test_a_revision_is_found_among_many_order_keys(etcd: LocalEtcd) -> None:
    """More order keys than one request reads: the seq of a revision is found by
    probing, at every boundary of a page of order keys."""
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        sent = [ev(i) for i in range(3 * ORDER_PAGE + 7)]
        revisions = [await store.append([e]) for e in sent]
        for n in (0, 1, ORDER_PAGE - 1, ORDER_PAGE, ORDER_PAGE + 1, 2 * ORDER_PAGE, len(sent) - 1):
            assert await store.ids_at(revisions[n]) == {sent[n].id}
            got = [e.id async for _, e in store.read_all(from_revision=revisions[n])]
            assert got == [e.id for e in sent[n:]]
        assert await store.ids_at(revisions[-1] + 1) == frozenset()


async def test_appends_waiting_for_their_turn_go_together_each_whole(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        calls = [[ev(100 * n + i) for i in range(3)] for n in range(30)]
        returned = await asyncio.gather(*(store.append(c) for c in calls))
        stored = {event_id: r for r, event_id in await read(store)}
        for call, revision in zip(calls, returned, strict=True):
            assert {stored[e.id] for e in call} == {revision}  # whole, at what it returned
        assert len(set(returned)) < len(calls)  # fewer transactions than appends
        assert len(await order_entries(store)) == len(set(returned))
