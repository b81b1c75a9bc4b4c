"""Event-store benchmark: appends per second one at a time and batched (one
transaction per batch, several batches in flight) on one local etcd, and the time
to fold 100,000 events. Targets: >= 3,000 events/s batched, fold <= 3 s."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from devtools.local_etcd import LocalEtcd
from events.ids import EventId, NodeName
from events.model import Event, NodeFlagsSet
from events.projection import fold
from events.state import ClusterState
from events.store import EventStore


def _event(i: int) -> NodeFlagsSet:
    return NodeFlagsSet(
        id=EventId(uuid.uuid4().hex),
        time=time.time(),
        actor="bench",
        reason=f"bench {i}",
        node=NodeName(f"node{i % 40}"),
        drained=bool(i % 2),
    )


def _mixed_events(n: int) -> list[Event]:
    """A realistic mix: declarations, placements, steps and node observations."""
    from events.ids import InstanceName
    from events.model import (
        DiskPlacement,
        InstanceDeclared,
        InstancePlaced,
        NodeDeclared,
        NodeObserved,
        StepStarted,
        StepSucceeded,
        VmObs,
    )
    from events.specs import DiskSpec, InstanceSpec, NodeSpec

    out: list[Event] = []
    now = time.time()
    for i in range(40):
        out.append(
            NodeDeclared(
                id=EventId(f"n{i}"),
                time=now,
                actor="b",
                spec=NodeSpec(
                    name=NodeName(f"node{i}"),
                    address="10.0.0.1",
                    memory_mib=24576,
                    disk_mib=747520,
                    cpus=8,
                ),
            )
        )
    i = 0
    while len(out) < n:
        name = InstanceName(f"vm{i % 2000}")
        node = NodeName(f"node{i % 40}")
        kind = i % 6
        eid = EventId(f"e{i}")
        if kind == 0:
            out.append(
                InstanceDeclared(
                    id=eid,
                    time=now,
                    actor="b",
                    spec=InstanceSpec(
                        name=name, memory_mib=1024, vcpus=1, disks=(DiskSpec(size_mib=10240),)
                    ),
                )
            )
        elif kind == 1:
            out.append(
                InstancePlaced(
                    id=eid,
                    time=now,
                    actor="b",
                    instance=name,
                    primary=node,
                    secondary=NodeName(f"node{(i + 1) % 40}"),
                    disks=(DiskPlacement(index=0, size_mib=10240, minor=i % 2000, port=11000),),
                )
            )
        elif kind in (2, 3):
            cls = StepStarted if kind == 2 else StepSucceeded
            out.append(
                cls(id=eid, time=now, actor="b", key=f"instance/{name}", step="start-vm", node=node)
            )
        else:
            out.append(
                NodeObserved(
                    id=eid,
                    time=now,
                    actor="b",
                    node=node,
                    vms=tuple(VmObs(name=f"vm{j}", pid=j, status="running") for j in range(i % 50)),
                )
            )
        i += 1
    return out


async def _run(endpoint: str) -> dict[str, Any]:
    async with EventStore.connect([endpoint], "bench") as store:
        n_single = 1000
        started = time.perf_counter()
        for i in range(n_single):
            await store.append([_event(i)])
        single = n_single / (time.perf_counter() - started)

        batch, inflight, total = 100, 8, 20_000
        events = [_event(i) for i in range(total)]
        started = time.perf_counter()
        sem = asyncio.Semaphore(inflight)

        async def one(chunk: list[Event]) -> None:
            async with sem:
                await store.append(chunk)

        await asyncio.gather(*(one(events[i : i + batch]) for i in range(0, total, batch)))
        batched = total / (time.perf_counter() - started)

        started = time.perf_counter()
        read = [x async for x in store.read_all()]
        read_s = time.perf_counter() - started

    fold_events = list(enumerate(_mixed_events(100_000), start=1))
    started = time.perf_counter()
    state = fold(ClusterState(), fold_events)
    fold_s = time.perf_counter() - started
    assert state.event_count == 100_000
    return {
        "appends_per_s_one_at_a_time": round(single),
        "appends_per_s_batched": round(batched),
        "batch_size": batch,
        "batches_in_flight": inflight,
        "read_all_s": round(read_s, 2),
        "events_read": len(read),
        "fold_100k_s": round(fold_s, 2),
        "table": [
            ["measure", "value", "target"],
            ["appends/s, one event per txn", round(single), "-"],
            [f"appends/s, {batch} per txn, {inflight} in flight", round(batched), ">= 3000"],
            [f"read_all of {len(read)} events (s)", round(read_s, 2), "-"],
            ["fold 100,000 events (s)", round(fold_s, 2), "<= 3"],
        ],
    }


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        etcd = LocalEtcd(data_dir=Path(tmp) / "etcd").start()
        try:
            return asyncio.run(_run(etcd.endpoint))
        finally:
            etcd.stop()
