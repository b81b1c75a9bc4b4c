"""The event store against a real etcd (private, on free ports): atomic and
idempotent appends, optimistic concurrency, ordered reads, a subscription that
survives etcd being killed and compaction, corrupt records, an unreachable etcd."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from devtools.local_etcd import LocalEtcd, free_port
from events.codec import encode
from events.model import Event, EventUndecodable
from events.projection import fold
from events.state import ClusterState
from events.store import EtcdUnavailable, EventStore, VersionConflict
from tests.support.cluster.events import ev


async def all_events(store: EventStore, from_revision: int = 0) -> list[tuple[int, Event]]:
    return [x async for x in store.read_all(from_revision=from_revision)]


async def test_append_read_in_order_and_idempotent(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        batch = [ev(i) for i in range(300)]  # more than one transaction's worth
        requests: list[str] = []
        store.on_request = lambda operation, _: requests.append(operation)
        first = await store.append(batch[:10])
        # A store's first append reads the order index's counter; then one
        # request per append: the revision (and the next seq) came with the answer.
        assert requests == ["order", "append"]
        last = await store.append(batch[10:])
        assert requests == ["order", "append", "append", "append", "append"]
        store.on_request = None
        got = await all_events(store)
        assert [e.id for _, e in got] == [e.id for e in batch]
        # Each append returns the revision its (last transaction's) events were stored at.
        assert first == got[0][0] == got[9][0]
        assert last == got[-1][0] > got[10][0]
        assert [r for r, _ in got] == sorted(r for r, _ in got)
        # The same ids again: stored once.
        rev = await store.append(batch[5:7])
        assert rev == got[5][0]
        assert len(await all_events(store)) == 300
        # Another cluster in the same etcd sees nothing of c1.
    async with EventStore.connect([etcd.endpoint], "c2", credentials=etcd.credentials()) as other:
        assert await all_events(other) == []


async def test_a_record_read_back_is_the_event_written_unless_its_bytes_changed(
    etcd: LocalEtcd,
) -> None:
    """The writer reads its own records back without decoding them again (the
    event it wrote), as another reader decodes them; one changed in etcd behind
    its back is read as etcd holds it."""
    connect = [etcd.endpoint], "c1"
    async with (
        EventStore.connect(*connect, credentials=etcd.credentials()) as store,
        EventStore.connect(*connect, credentials=etcd.credentials()) as other,
    ):
        batch = [ev(i) for i in range(5)]
        await store.append(batch)
        changed = replace(batch[2], reason="rewritten behind the writer's back")
        await store.client.put(store.event_key(changed.id), b"2\n" + encode(changed))
        mine, theirs = await all_events(store), await all_events(other)
        assert mine == theirs
        assert [e for _, e in mine] == [*batch[:2], changed, *batch[3:]]
        assert mine[0][1] is batch[0]  # the event written, not a copy decoded


async def test_stale_writer_gets_a_conflict_and_writes_nothing(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        await store.append([ev(1)], expected={"node/n1": 0})
        await store.append([ev(2)], expected={"node/n1": 1})
        with pytest.raises(VersionConflict) as info:
            await store.append([ev(3), ev(4, node="n2")], expected={"node/n1": 1})
        assert info.value.actual == 2
        state = fold(ClusterState(), await all_events(store))
        assert state.event_count == 2
        assert state.versions["node/n1"] == 2  # the fold counts what etcd counts


async def test_subscription_survives_etcd_kill_and_delivers_exactly_once(
    etcd: LocalEtcd,
) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        sent = [ev(i) for i in range(20)]
        await store.append(sent[:10])
        received: list[str] = []

        async def consume() -> None:
            async for _, event in store.subscribe(1):
                received.append(event.id)
                if len(received) == 40:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        await store.append(sent[10:])
        await asyncio.sleep(0.3)
        etcd.kill()
        await asyncio.sleep(0.5)
        etcd.restart()
        more = [ev(100 + i) for i in range(20)]
        async with EventStore.connect(
            [etcd.endpoint], "c1", credentials=etcd.credentials()
        ) as writer:
            for i in range(0, 20, 5):
                await writer.append(more[i : i + 5])
        await asyncio.wait_for(task, 30)
        assert received == [e.id for e in sent + more]


async def test_subscription_from_a_compacted_revision_falls_back_to_a_read(
    etcd: LocalEtcd,
) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        sent = [ev(i) for i in range(10)]
        for e in sent:
            await store.append([e])
        rev = await store.current_revision()
        await store.compact(rev)
        got: list[str] = []
        async for _, event in store.subscribe(1):
            got.append(event.id)
            if len(got) == 10:
                break
        assert got == [e.id for e in sent]


async def test_corrupt_record_is_named_and_stands_in_as_undecodable(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        sent = [ev(1), ev(2), ev(3)]
        await store.append(sent[:2])
        await store.append(sent[2:])
        # The bytes of a stored record changed behind corral's back.
        victim = store.event_key(sent[1].id)
        await store.client.put(victim, b"1\n{broken")
        got = [e for _, e in await all_events(store)]
        assert len(got) == 3 and isinstance(got[1], EventUndecodable)
        stand_in = got[1]
        assert stand_in.key == victim.decode() and "not JSON" in stand_in.why
        assert [c.key for c in store.corrupt] == [victim.decode()]
        # A record put by something other than an append (no order index entry)
        # is not read; a read of the whole log says so.
        await store.client.put(store.event_key("garbage"), b"0\n{}")
        assert len(await all_events(store)) == 3
        assert "1 event records in etcd are not in the order index" in store.corrupt[-1].why


async def test_unreachable_etcd_is_one_clear_line() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    with pytest.raises(EtcdUnavailable) as info:
        async with EventStore.connect([endpoint], "c1", timeout=1.0):
            pass
    message = str(info.value)
    assert endpoint in message and "\n" not in message and "--etcd" in message


async def test_read_one_objects_events_in_order(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        a = [ev(i, node="a") for i in range(5)]
        b = [ev(10 + i, node="b") for i in range(5)]
        for x, y in zip(a, b, strict=True):
            await store.append([x, y])
        got = await store.read_object("node/a")
        assert [e.id for _, e in got] == [e.id for e in a]


async def test_a_read_cut_short_by_the_channel_closing_is_unavailable(etcd: LocalEtcd) -> None:
    """gRPC cancels the calls of a channel closed under them (the store moving to
    another etcd member): a read of the log so cut short is EtcdUnavailable, which
    the subscription retries, not a CancelledError, which ended the subscription's
    pump without a word and froze the orchestrator's fold (make chaos seed 0)."""
    async with EventStore.connect([etcd.endpoint], "t", credentials=etcd.credentials()) as store:
        await store.append([ev(i) for i in range(50)])

        async def read() -> int:
            return len([e async for e in store.read_all()])

        for _ in range(20):  # the close must land while the range read is in flight
            reading = asyncio.create_task(read())
            await asyncio.sleep(0)
            await store.client.close()
            try:
                await reading
            except EtcdUnavailable:
                return
            finally:
                await store.client.connect()
        pytest.skip("the channel never closed under a read in flight")
