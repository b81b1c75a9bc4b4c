"""Event-store benchmark: appends per second one at a time and batched (one
transaction per batch, several batches in flight), a full read and watch delivery,
each on a plaintext local etcd and on one with TLS, client certificates and
corral's etcd roles (side by side, with the ratio), and the time to fold 100,000
events. Targets: >= 3,000 events/s batched (with TLS and auth), fold <= 3 s."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devtools.local_etcd import LocalEtcd
from events.etcd_client import EtcdCredentials
from events.ids import EventId, NodeName, new_event_id
from events.model import Event, NodeFlagsSet
from events.projection import fold
from events.state import ClusterState
from events.store import EventStore

BATCH, INFLIGHT, TOTAL, WATCHED = 100, 8, 20_000, 10_000


def _event(i: int) -> NodeFlagsSet:
    return NodeFlagsSet(
        id=new_event_id(),
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


def connector(
    endpoint: str, credentials: EtcdCredentials | None
) -> Callable[[], contextlib.AbstractAsyncContextManager[EventStore]]:
    return lambda: EventStore.connect([endpoint], "bench", credentials=credentials)


async def _store_figures(
    connect: Callable[[], contextlib.AbstractAsyncContextManager[EventStore]],
) -> dict[str, Any]:
    """Appends one at a time, batched, a full read, and watch delivery: one etcd,
    one way of reaching it (two connections: a writer and a watcher)."""
    async with connect() as store, connect() as watcher:
        n_single = 1000
        started = time.perf_counter()
        for i in range(n_single):
            await store.append([_event(i)])
        single = n_single / (time.perf_counter() - started)

        events = [_event(i) for i in range(TOTAL)]
        started = time.perf_counter()
        sem = asyncio.Semaphore(INFLIGHT)

        async def one(chunk: Sequence[Event]) -> None:
            async with sem:
                await store.append(chunk)

        await asyncio.gather(*(one(events[i : i + BATCH]) for i in range(0, TOTAL, BATCH)))
        batched = TOTAL / (time.perf_counter() - started)

        started = time.perf_counter()
        read = [x async for x in store.read_all()]
        read_s = time.perf_counter() - started

        # Watch: a second connection subscribed at the head receives a batched
        # append of WATCHED events; events delivered per second, first append to
        # last delivery.
        head = await store.current_revision()
        got = 0
        done = asyncio.Event()

        async def follow() -> None:
            nonlocal got
            async for _ in watcher.subscribe(head + 1):
                got += 1
                if got >= WATCHED:
                    done.set()
                    return

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.2)  # the watch is open before the first append
        more = [_event(i) for i in range(WATCHED)]
        started = time.perf_counter()
        await asyncio.gather(*(one(more[i : i + BATCH]) for i in range(0, WATCHED, BATCH)))
        await asyncio.wait_for(done.wait(), 120)
        watched = WATCHED / (time.perf_counter() - started)
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    return {
        "appends_per_s_one_at_a_time": round(single),
        "appends_per_s_batched": round(batched),
        "read_all_s": round(read_s, 2),
        "events_read": len(read),
        "watch_events_per_s": round(watched),
    }


def _fold_s() -> float:
    fold_events = list(enumerate(_mixed_events(100_000), start=1))
    started = time.perf_counter()
    state = fold(ClusterState(), fold_events)
    took = time.perf_counter() - started
    assert state.event_count == 100_000
    return took


def _measure(tmp: Path, *, tls: bool) -> dict[str, Any]:
    etcd = LocalEtcd(data_dir=tmp / ("etcd-tls" if tls else "etcd-plain"), tls=tls).start()
    try:
        return asyncio.run(
            _store_figures(connector(etcd.endpoint, etcd.credentials("orchestrator")))
        )
    finally:
        etcd.stop()


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        plain = _measure(Path(tmp), tls=False)
        secure = _measure(Path(tmp), tls=True)
    fold_s = _fold_s()

    def row(label: str, key: str, target: str) -> list[object]:
        ratio = secure[key] / plain[key] if plain[key] else 0.0
        return [label, plain[key], secure[key], f"{ratio:.2f}", target]

    return {
        "plaintext": plain,
        "tls_and_auth": secure,
        "batch_size": BATCH,
        "batches_in_flight": INFLIGHT,
        "fold_100k_s": round(fold_s, 2),
        # The figures of the TLS run, under the names earlier results used.
        **{k: secure[k] for k in ("appends_per_s_one_at_a_time", "appends_per_s_batched")},
        "table": [
            ["measure", "plaintext", "TLS+auth", "TLS/plain", "target"],
            row("appends/s, one event per txn", "appends_per_s_one_at_a_time", "-"),
            row(
                f"appends/s, {BATCH} per txn, {INFLIGHT} in flight",
                "appends_per_s_batched",
                ">= 3000",
            ),
            row(f"read_all of {plain['events_read']} events (s)", "read_all_s", "-"),
            row(f"watch: {WATCHED} events delivered, per s", "watch_events_per_s", "-"),
            ["fold 100,000 events (s)", round(fold_s, 2), "", "", "<= 3"],
        ],
    }
