"""Audit seals over a real etcd: an untouched log verifies; changing the stored
bytes of one event, deleting one, or slipping one into a sealed range is named;
more seals than one range request returns are read page by page."""

from __future__ import annotations

import json
from dataclasses import replace

from devtools.local_etcd import LocalEtcd
from events.ids import EventId
from events.lifecycle.seals import (
    SEAL_PAGE,
    Seal,
    _as_dict,
    _seal_key,
    load_seals,
    seal_pending,
    verify,
)
from events.model import NodeObserved
from events.store import EventStore
from tests.support.cluster.events import ev
from tests.support.states.big_cluster import build_events


async def test_tampering_is_named(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        events = [ev(i) for i in range(250)]
        for i in range(0, 250, 10):
            await store.append(events[i : i + 10])
        assert await seal_pending(store, block=100) == 2
        assert await seal_pending(store, block=100, final=True) == 1
        result = await verify(store)
        assert result.ok and result.sealed_events == 250 and result.seals == 3
        victim = store.event_key(events[137].id)
        raw = (await store.client.get(victim)).value
        await store.client.put(victim, raw.replace(b"event 137", b"event 999"))
        result = await verify(store)
        assert not result.ok
        assert result.key == victim.decode() and "do not match" in result.problem
        await store.client.put(victim, raw)
        assert (await verify(store)).ok
        await store.client.delete(store.event_key(events[5].id))
        result = await verify(store)
        assert not result.ok and result.key.endswith(events[5].id) and "missing" in result.problem


async def test_seals_are_read_a_page_at_a_time(etcd: LocalEtcd) -> None:
    # All seals in one response passed gRPC's 4 MB limit at about 30,000 events.
    count = SEAL_PAGE * 2 + 50
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        for i in range(count):
            await store.append([ev(i)])
        assert await seal_pending(store, block=1) == count
        seals = await load_seals(store)
        assert [s.seq for s in seals] == list(range(count))
        result = await verify(store)
        assert result.ok and result.seals == count and result.sealed_events == count
        await store.append([ev(count)])
        assert await seal_pending(store, block=1) == 1
        newest = (await load_seals(store))[-1]
        assert newest.seq == count and newest.prev == seals[-1].chain


async def test_seals_past_one_grpc_response(etcd: LocalEtcd) -> None:
    """400 seals of 100 events each (13 KB apiece, 5 MB in all, as a log of
    40,000 events makes): more than gRPC's 4 MB answer, still read whole."""
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        for seq in range(400):
            seal = Seal(
                seq=seq,
                first_revision=seq * 100,
                last_revision=seq * 100 + 99,
                keys=tuple(f"/corral/c1/events/{seq:08d}{k:024d}" for k in range(100)),
                digests=tuple(f"{seq * 100 + k:064x}" for k in range(100)),
                prev=f"{seq:064x}",
                chain=f"{seq + 1:064x}",
            )
            await store.client.put(_seal_key(store, seq), json.dumps(_as_dict(seal)).encode())
        seals = await load_seals(store)
        assert [s.seq for s in seals] == list(range(400)) and seals[-1].chain == f"{400:064x}"


async def test_a_log_past_one_grpc_answer_reads_back(etcd: LocalEtcd) -> None:
    """Nodes' observations at 2,000 instances (100 resources each), 200 of them: one
    page of the log is more than gRPC's default 4 MB answer, and reads back whole."""
    seen = [e for _, e in build_events(40, 2000) if isinstance(e, NodeObserved)]
    built = [replace(e, id=EventId(f"{k:032x}")) for k, e in enumerate(seen * 5)]
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        for i in range(0, len(built), 20):
            await store.append(built[i : i + 20])
        read = [event.id async for _, event in store.read_all()]
        assert sorted(read) == sorted(event.id for event in built)
