"""The log over months: bytes per event in etcd, events per day of a steady
2,000-VM cluster on 40 nodes and the days until etcd's 2 GiB quota; start-up with
a million events in the log (with a checkpoint, without one, and after archiving
all but the newest 200,000); `corral status` at 2,000 instances, start-up
included.

How the figures are made:
- probe events: this host's own MemAvailable sampled once a second for a while
  (a real Linux host's free memory, which every probe reads), counted as the old
  prober recorded it (any change) and as it records it now (a move of 2% of the
  total); times 40 nodes and 86,400 probes a day;
- events of one node loss (about 50 primaries at 40 nodes / 2,000 instances): from
  the heal-at-size bench's run (bench/results/heal_scale.json) when it ran before;
- jobs: 50 live migrations a day (an assumption), each as many events as one
  migration appends here (counted on a 4-node lab after the cluster settles);
- bytes per event: etcd's database growth (`dbSize`) over the million appended
  events (a converged 2,000-instance cluster's probes and steps), seals included.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.local_etcd import LocalEtcd
from events.lifecycle.checkpoints import save_checkpoint
from events.lifecycle.retention import RetentionPolicy, archive_pass, count_events
from events.lifecycle.seals import seal_pending
from events.loading import load_state
from events.model import Event
from events.projection import fold
from events.state import ClusterState
from events.store import EventStore
from orchestrator.cluster_report import saved_rows
from reactors.prober import FREE_SPACE_STEP
from tests.support.big_cluster import build_events, next_moment

NODES = 40
INSTANCES = 2000
EVENTS = int(os.environ.get("CORRAL_BENCH_LOG_EVENTS", "1000000"))
QUOTA = 2 * 1024**3
JOBS_PER_DAY = 50
KEEP = int(os.environ.get("CORRAL_BENCH_LOG_KEEP", "200000"))
PROBE_SAMPLES = int(os.environ.get("CORRAL_BENCH_PROBE_SAMPLES", "60"))


def _mem_available_mib() -> tuple[int, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) // 1024
    return values["MemTotal"], values["MemAvailable"]


def probe_change_rates(samples: int) -> dict[str, float]:
    """Share of 1 s probes of this host that would append a facts event."""
    total, last_any = _mem_available_mib()
    last_step = last_any
    changed_any = changed_step = 0
    for _ in range(samples):
        time.sleep(1.0)
        _, now = _mem_available_mib()
        if now != last_any:
            changed_any += 1
            last_any = now
        if abs(now - last_step) >= total * FREE_SPACE_STEP:
            changed_step += 1
            last_step = now
    return {"old": changed_any / samples, "new": changed_step / samples}


async def _db_size(store: EventStore) -> int:
    status: Any = await store.client.status()
    return int(status.db_size)


async def _append_all(store: EventStore, events: list[Event], *, per_txn: int = 60) -> None:
    sem = asyncio.Semaphore(32)

    async def one(chunk: list[Event]) -> None:
        async with sem:
            await store.append(chunk)

    await asyncio.gather(*(one(events[i : i + per_txn]) for i in range(0, len(events), per_txn)))


def _steady(state: ClusterState, count: int) -> list[Event]:
    out: list[Event] = []
    n = 0
    t = time.time()
    st = state
    while len(out) < count:
        moment = next_moment(st, n, t=t)
        st = fold(st, [(st.revision + 1, e) for e in moment])
        out.extend(moment)
        n += 1
    return out[:count]


async def _cli_status(etcd: LocalEtcd, cluster: str, runs: int = 7) -> list[float]:
    env = {**os.environ, "CORRAL_ETCD": etcd.endpoint, "CORRAL_CLUSTER": cluster}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "orchestrator.cli.main", "status"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        times.append(time.perf_counter() - t0)
        assert done.returncode == 0, done.stderr[-2000:]
    return sorted(times)


async def _timed_load(store: EventStore) -> tuple[float, ClusterState]:
    fresh = EventStore(client=store.client, cluster=store.cluster, endpoint=store.endpoint)
    t0 = time.perf_counter()
    state = await load_state(fresh)
    return time.perf_counter() - t0, state


async def migration_events(tmp: Path, *, jobs: int = 3) -> float:
    """Events appended per live migration on a settled 4-node lab (the job, its
    steps, the placement and the nodes' new observations)."""
    from events.model import JobKind
    from orchestrator.operations import submit_job
    from tests.support.cluster_harness import cluster, instances

    async with cluster(tmp) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(4))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=120)
        await asyncio.sleep(2)
        before = engine.state.event_count
        for n in range(jobs):
            name = sorted(engine.state.desired.instances)[n]
            accepted = await submit_job(
                c.store,
                engine.state,
                kind=JobKind.INSTANCE_MIGRATE,
                target=name,
                params={},
                actor="bench",
                reason="bench",
            )
            job = accepted.job_id

            def migrated(job: Any = job) -> bool:
                found = engine.state.jobs.get(job)
                return found is not None and found.status == "success"

            await c.wait_for("migrated", migrated, timeout=120)
            await c.wait_for("converged", c.converged, timeout=120)
        await asyncio.sleep(2)
        return (engine.state.event_count - before) / jobs


async def _run(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    etcd = LocalEtcd(data_dir=tmp / "etcd").start()
    try:
        async with EventStore.connect([etcd.endpoint], "big") as store:
            # A converged 2,000-instance cluster, checkpointed: `corral status`.
            built = build_events(NODES, INSTANCES)
            by_rev: dict[int, list[Event]] = {}
            for rev, event in built:
                by_rev.setdefault(rev, []).append(event)
            for rev in sorted(by_rev):
                await _append_all(store, by_rev[rev])
            _, state = await _timed_load(store)
            await save_checkpoint(store, state, views=saved_rows(state, now=time.time()))
            cli = await _cli_status(etcd, "big")
            out["cli_status_2000_median_s"] = round(cli[len(cli) // 2], 3)
            out["cli_status_2000_max_s"] = round(cli[-1], 3)

            # A million events of the converged cluster's life after it.
            size0 = await _db_size(store)
            t0 = time.perf_counter()
            steady = _steady(state, EVENTS)
            await _append_all(store, steady)
            out["append_s"] = round(time.perf_counter() - t0, 1)
            size1 = await _db_size(store)
            t0 = time.perf_counter()
            while await seal_pending(store, block=100):
                pass
            out["seal_s"] = round(time.perf_counter() - t0, 1)
            size2 = await _db_size(store)
            out["events_in_log"] = await count_events(store)
            out["bytes_per_event"] = round((size1 - size0) / len(steady))
            out["bytes_per_event_with_seals"] = round((size2 - size0) / len(steady))
            out["db_size_mib"] = round(size2 / 2**20)

            # Start-up without a checkpoint: the whole log folded.
            old = await store.client.get_prefix(store.root + b"checkpoints/")
            for kv in old:
                await store.client.delete(kv.key)
            full_s, full = await _timed_load(store)
            out["startup_full_replay_s"] = round(full_s, 1)
            # With a checkpoint a few seconds old (the orchestrator saves one
            # every 30 s): the last 1,000 events after it.
            tail = _steady(full, 1000)
            await save_checkpoint(store, full)
            await _append_all(store, tail)
            ck_s, with_ck = await _timed_load(store)
            assert with_ck.event_count == full.event_count + len(tail)
            out["startup_checkpoint_s"] = round(ck_s, 2)
            cli = await _cli_status(etcd, "big", runs=3)
            out["cli_status_1m_median_s"] = round(cli[len(cli) // 2], 3)

            # Archive all but the newest 200,000, compact, defragment.
            await seal_pending(store, block=100, final=True)
            await save_checkpoint(store, with_ck)
            t0 = time.perf_counter()
            policy = RetentionPolicy(
                url=(tmp / "archive").as_uri(), keep_events=KEEP, min_segment_events=KEEP // 4
            )
            while await archive_pass(store, policy) is not None:
                pass
            out["archive_s"] = round(time.perf_counter() - t0, 1)
            print(f"  {out}", flush=True)
            out["events_in_etcd_after_archive"] = await count_events(store)
            out["db_size_after_archive_mib"] = round(await _db_size(store) / 2**20)
            out["archive_bytes_mib"] = round(
                sum(f.stat().st_size for f in (tmp / "archive").iterdir()) / 2**20, 1
            )
            arch_s, _ = await _timed_load(store)
            out["startup_checkpoint_archived_s"] = round(arch_s, 2)
    finally:
        etcd.stop()
    return out


def _per_day(out: dict[str, Any], rates: dict[str, float]) -> None:
    heal = Path(__file__).parent / "results" / "heal_scale.json"
    loss_events = None
    if heal.exists():
        doc = json.loads(heal.read_text())
        loss_events = doc.get("events_node_loss")
    for rule in ("old", "new"):
        probes = NODES * 86_400 * rates[rule]
        day = probes + JOBS_PER_DAY * out["events_per_migration"] + (loss_events or 0) / 7
        out[f"events_per_day_{rule}"] = round(day)
        out[f"days_to_quota_{rule}"] = round(QUOTA / (day * out["bytes_per_event_with_seals"]), 1)
    out["events_node_loss"] = loss_events


def run() -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    rates = probe_change_rates(PROBE_SAMPLES)
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(_run(Path(tmp)))
    with tempfile.TemporaryDirectory() as tmp:
        out["events_per_migration"] = round(asyncio.run(migration_events(Path(tmp))), 1)
    out["probe_change_rate_old"] = round(rates["old"], 3)
    out["probe_change_rate_new"] = round(rates["new"], 3)
    _per_day(out, rates)
    table: list[list[Any]] = [["measure", "old", "now", "target"]]
    table += [
        ["bytes per event in etcd (with seals)", "-", out["bytes_per_event_with_seals"], "-"],
        [
            "probes that append an event (this host's MemAvailable, 1 s)",
            out["probe_change_rate_old"],
            out["probe_change_rate_new"],
            "-",
        ],
        [
            "events/day, steady 2,000 VMs / 40 nodes",
            out["events_per_day_old"],
            out["events_per_day_new"],
            "-",
        ],
        ["days until etcd's 2 GiB quota", out["days_to_quota_old"], out["days_to_quota_new"], "-"],
        [
            f"start-up, {out['events_in_log'] // 1000}k events (s)",
            out["startup_full_replay_s"],
            out["startup_checkpoint_s"],
            "< 5",
        ],
        [
            "start-up after archiving all but 200k (s)",
            "-",
            out["startup_checkpoint_archived_s"],
            "< 5",
        ],
        [
            "corral status, 2,000 instances (s, median of 7)",
            "-",
            out["cli_status_2000_median_s"],
            "< 0.3",
        ],
        ["corral status, 1M events (s, median of 3)", "-", out["cli_status_1m_median_s"], "-"],
        [
            "etcd db before / after archiving (MiB)",
            out["db_size_mib"],
            out["db_size_after_archive_mib"],
            "-",
        ],
        ["archive on disk (MiB)", "-", out["archive_bytes_mib"], "-"],
    ]
    return {**out, "table": table}
