"""Audit seals over a real etcd: an untouched log verifies; changing the stored
bytes of one event, deleting one, or slipping one into a sealed range is named."""

from __future__ import annotations

from devtools.local_etcd import LocalEtcd
from events.lifecycle.seals import seal_pending, verify
from events.store import EventStore
from tests.support.events import ev


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
