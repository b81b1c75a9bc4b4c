"""Reactor appends made together go to etcd in one transaction, still guarded:
forty instances' steps appended at once share one revision (each call whole),
a stale term refuses the whole batch and stores nothing, and appends with
expected versions are never merged with others."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from devtools.local_etcd import LocalEtcd
from events.ids import new_event_id
from events.model import StepStarted, instance_key
from events.state import ClusterState
from events.store import EventStore, NotLeader, VersionConflict
from reactors.context import ReactorContext, ReactorSettings
from reactors.seams import NodeOps


def step(n: int) -> StepStarted:
    return StepStarted(
        id=new_event_id(), time=1.0, actor="t", key=instance_key(f"vm{n:03d}"), step="drbd-up"
    )


async def test_appends_made_together_share_one_guarded_transaction(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        await store.client.put(store.leader_key, b"me")
        term = int((await store.client.get(store.leader_key)).create_revision)
        ctx = ReactorContext(
            log_store=store,
            nodes=cast(NodeOps, object()),
            settings=ReactorSettings(),
            state=ClusterState(),
            term=term,
        )
        calls = [[step(n), step(n + 100)] for n in range(40)]
        revisions = await asyncio.gather(*(ctx.append(c, wait=False) for c in calls))
        # 40 calls of 2 events on 2 objects each: 160 puts, more than one
        # transaction may hold (120), so two transactions, each call whole in one.
        assert 1 < len(set(revisions)) <= 2
        stored = [(r, e) async for r, e in store.read_all()]
        by_id = dict((e.id, r) for r, e in stored)
        assert len(stored) == 80
        for call, revision in zip(calls, revisions, strict=True):
            assert {by_id[e.id] for e in call} == {revision}

        # A newer leader: the whole batch is refused, nothing stored.
        await store.client.delete(store.leader_key)
        await store.client.put(store.leader_key, b"other")
        results: list[Any] = await asyncio.gather(
            *(ctx.append([step(200 + n)], wait=False) for n in range(10)),
            return_exceptions=True,
        )
        assert all(isinstance(r, NotLeader) for r in results)
        assert len([x async for x in store.read_all()]) == 80

        # Expected versions are checked per call, never merged away.
        ctx.term = int((await store.client.get(store.leader_key)).create_revision)
        key = instance_key("vm000")
        with pytest.raises(VersionConflict):
            await asyncio.gather(
                ctx.append([step(0)], expected={key: 0}, wait=False),
                ctx.append([step(300)], wait=False),
            )
