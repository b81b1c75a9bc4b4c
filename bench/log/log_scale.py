"""The log at a million events: bytes per event in etcd, start-up with a million
events in the log (with a checkpoint, without one, and after archiving all but
the newest 200,000); `corral status` at 2,000 instances, start-up included, and
at a million events. `bench.log.log_budget` turns the bytes per event into days
until etcd's quota. $CORRAL_BENCH_STATUS_BEFORE (the `corral status` figure of the
code before a change, measured the same session) is printed beside this run's, or
with $CORRAL_BENCH_STATUS_BEFORE_TREE (a checkout of that code) it is measured here,
run by run beside this code's.

Bytes per event: etcd's database growth (`dbSize`) over the million appended
events (a converged 2,000-instance cluster's probes and steps), seals included.
Each start-up is timed as a process starting would fold (a fresh store), with
its CPU-seconds beside the wall time."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.timing.bytecode import compile_corral
from devtools.local_etcd import LocalEtcd
from events.lifecycle.checkpoints import save_checkpoint
from events.lifecycle.retention import RetentionPolicy, archive_pass, count_events
from events.lifecycle.seals import seal_pending
from events.loading import load_state
from events.model import Event
from events.projection import fold
from events.state import ClusterState
from events.store import EventStore, WriteNotConfirmed
from orchestrator.cluster_report import saved_rows
from tests.support.states.big_cluster import build_events, next_moment

NODES = 40
INSTANCES = 2000
EVENTS = int(os.environ.get("CORRAL_BENCH_LOG_EVENTS", "1000000"))
KEEP = int(os.environ.get("CORRAL_BENCH_LOG_KEEP", "200000"))
# `corral status` at 2,000 instances before a change, as its row prints it ("0.38
# (0.33)": median seconds, CPU-seconds), measured on the same machine in the same
# session (the machine is shared: a figure from another day says little), printed
# beside this run's.
STATUS_BEFORE = os.environ.get("CORRAL_BENCH_STATUS_BEFORE", "")
# Or a checkout of the code before the change (`git worktree add DIR COMMIT`): its
# `corral status` is then timed here, each run beside one of this code's.
STATUS_BEFORE_TREE = os.environ.get("CORRAL_BENCH_STATUS_BEFORE_TREE", "")
STATUS_RUNS = 11


async def _db_size(store: EventStore) -> int:
    status: Any = await store.client.status()
    return int(status.db_size)


async def _append_all(store: EventStore, events: list[Event], *, per_txn: int = 60) -> None:
    """Append in transactions of `per_txn`, 8 in flight. A write etcd did not
    confirm in time (a loaded machine: etcd answered in seconds at load 25) is
    sent again, as an orchestrator does: an append is idempotent by event id."""
    sem = asyncio.Semaphore(8)

    async def one(chunk: list[Event]) -> None:
        async with sem:
            for attempt in range(5):
                try:
                    await store.append(chunk)
                    return
                except WriteNotConfirmed:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1.0)

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


def _etcd_cpu_s(etcd: LocalEtcd) -> float:
    """CPU-seconds etcd's process has used so far (user + system)."""
    assert etcd.process is not None
    fields = Path(f"/proc/{etcd.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _one_page(store: EventStore, from_revision: int) -> float:
    """Seconds to read one page (1,000 events) of the log from `from_revision`
    with a fresh store, as a reader resuming there would."""
    fresh = EventStore(client=store.client, cluster=store.cluster, endpoint=store.endpoint)
    t0 = time.perf_counter()
    n = 0
    async for _ in fresh.read_all(from_revision=from_revision):
        n += 1
        if n >= 1000:
            break
    return time.perf_counter() - t0


async def _seal_and_page(store: EventStore, etcd: LocalEtcd, out: dict[str, Any]) -> None:
    """Seal the whole log (timed, with etcd's CPU), then time one page read."""
    t0, e0 = time.perf_counter(), _etcd_cpu_s(etcd)
    while await seal_pending(store, block=100):
        pass
    out["seal_s"] = round(time.perf_counter() - t0, 1)
    out["seal_etcd_cpu_s"] = round(_etcd_cpu_s(etcd) - e0, 1)
    head = await store.current_revision()
    e0 = _etcd_cpu_s(etcd)
    out["one_page_mid_log_s"] = round(await _one_page(store, head // 2), 3)
    out["one_page_etcd_cpu_s"] = round(_etcd_cpu_s(etcd) - e0, 2)
    print(f"  {out}", flush=True)  # each phase's figures as they come


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _cli_status(
    etcd: LocalEtcd,
    cluster: str,
    runs: int = 7,
    command: tuple[str, ...] = ("status",),
    trees: tuple[Path | None, ...] = (None,),
) -> list[dict[str, float]]:
    """`corral status` (or `command`) as a user runs it (a new process, start-up
    included), from each of `trees` (None: this code) in turn, run by run: for
    each, median and max wall time and the median CPU-seconds it used."""
    for tree in trees:
        compile_corral(tree)  # as an installed corral is (bench.timing.bytecode)
    env = {**os.environ, "CORRAL_ETCD": etcd.endpoint, "CORRAL_CLUSTER": cluster}
    times: list[list[float]] = [[] for _ in trees]
    cpu: list[list[float]] = [[] for _ in trees]
    for _ in range(runs):
        for n, tree in enumerate(trees):
            t0, c0 = time.perf_counter(), _children_cpu_s()
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "orchestrator.cli.main", *command],
                capture_output=True,
                text=True,
                env=env,
                cwd=tree,
                timeout=300,
            )
            times[n].append(time.perf_counter() - t0)
            cpu[n].append(_children_cpu_s() - c0)
            assert done.returncode == 0, done.stderr[-2000:]
    out = []
    for wall, used in zip(times, cpu, strict=True):
        wall.sort()
        used.sort()
        out.append(
            {
                "median_s": round(wall[len(wall) // 2], 3),
                "max_s": round(wall[-1], 3),
                "cpu_median_s": round(used[len(used) // 2], 3),
            }
        )
    return out


async def _timed_load(store: EventStore) -> tuple[float, ClusterState, float]:
    """Wall time, the state and the CPU-seconds of folding the log as a process
    starting would (a fresh store: nothing cached)."""
    fresh = EventStore(client=store.client, cluster=store.cluster, endpoint=store.endpoint)
    t0, c0 = time.perf_counter(), time.process_time()
    state = await load_state(fresh)
    return time.perf_counter() - t0, state, time.process_time() - c0


async def _run(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    etcd = LocalEtcd(data_dir=tmp / "etcd").start()
    try:
        # A long timeout: compacting and defragmenting a db of hundreds of MiB
        # on a loaded machine takes longer than the 5 s an orchestrator allows.
        async with EventStore.connect([etcd.endpoint], "big", timeout=120.0) as store:
            # A converged 2,000-instance cluster, checkpointed: `corral status`.
            built = build_events(NODES, INSTANCES)
            by_rev: dict[int, list[Event]] = {}
            for rev, event in built:
                by_rev.setdefault(rev, []).append(event)
            for rev in sorted(by_rev):
                await _append_all(store, by_rev[rev])
            _, state, _ = await _timed_load(store)
            await save_checkpoint(store, state, views=saved_rows(state, now=time.time()))
            trees = (None, Path(STATUS_BEFORE_TREE)) if STATUS_BEFORE_TREE else (None,)
            cli, *before = await _cli_status(etcd, "big", runs=STATUS_RUNS, trees=trees)
            out["cli_status_2000_runs"] = STATUS_RUNS
            out["cli_status_2000_before"] = STATUS_BEFORE
            if before:
                old = before[0]
                out["cli_status_2000_before"] = f"{old['median_s']} ({old['cpu_median_s']})"
                out["cli_status_2000_before_tree"] = STATUS_BEFORE_TREE
            out["cli_status_2000_median_s"] = cli["median_s"]
            out["cli_status_2000_max_s"] = cli["max_s"]
            out["cli_status_2000_cpu_s"] = cli["cpu_median_s"]
            print(f"  corral status at 2,000 instances: {cli}", flush=True)
            (listed,) = await _cli_status(
                etcd, "big", runs=STATUS_RUNS, command=("instance", "list")
            )
            out["cli_instance_list_2000_median_s"] = listed["median_s"]
            out["cli_instance_list_2000_cpu_s"] = listed["cpu_median_s"]

            # A million events of the converged cluster's life after it.
            size0 = await _db_size(store)
            t0 = time.perf_counter()
            steady = _steady(state, EVENTS)
            await _append_all(store, steady)
            out["append_s"] = round(time.perf_counter() - t0, 1)
            size1 = await _db_size(store)
            await _seal_and_page(store, etcd, out)
            size2 = await _db_size(store)
            out["events_in_log"] = await count_events(store)
            out["bytes_per_event"] = round((size1 - size0) / len(steady))
            out["bytes_per_event_with_seals"] = round((size2 - size0) / len(steady))
            out["db_size_mib"] = round(size2 / 2**20)

            # Start-up without a checkpoint: the whole log folded.
            old = await store.client.get_prefix(store.root + b"checkpoints/")
            for kv in old:
                await store.client.delete(kv.key)
            e0 = _etcd_cpu_s(etcd)
            full_s, full, full_cpu = await _timed_load(store)
            out["startup_full_replay_etcd_cpu_s"] = round(_etcd_cpu_s(etcd) - e0, 1)
            out["startup_full_replay_s"] = round(full_s, 1)
            out["startup_full_replay_cpu_s"] = round(full_cpu, 1)
            # With a checkpoint a few seconds old (the orchestrator saves one
            # every 30 s): the last 1,000 events after it.
            tail = _steady(full, 1000)
            await save_checkpoint(store, full)
            await _append_all(store, tail)
            e0 = _etcd_cpu_s(etcd)
            ck_s, with_ck, ck_cpu = await _timed_load(store)
            out["startup_checkpoint_etcd_cpu_s"] = round(_etcd_cpu_s(etcd) - e0, 2)
            assert with_ck.event_count == full.event_count + len(tail)
            out["startup_checkpoint_s"] = round(ck_s, 2)
            out["startup_checkpoint_cpu_s"] = round(ck_cpu, 2)
            (cli,) = await _cli_status(etcd, "big", runs=3)
            out["cli_status_1m_median_s"] = cli["median_s"]
            out["cli_status_1m_cpu_s"] = cli["cpu_median_s"]

            await _archive(store, with_ck, tmp, out, etcd)
    finally:
        etcd.stop()
    return out


async def _archive(
    store: EventStore, state: ClusterState, tmp: Path, out: dict[str, Any], etcd: LocalEtcd
) -> None:
    """Archive all but the newest KEEP events, compact, defragment; start-up after."""
    print(f"  {out}", flush=True)
    # Archive all but the newest 200,000, compact, defragment.
    await seal_pending(store, block=100, final=True)
    await save_checkpoint(store, state)
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
    e0 = _etcd_cpu_s(etcd)
    arch_s, _, arch_cpu = await _timed_load(store)
    out["startup_checkpoint_archived_etcd_cpu_s"] = round(_etcd_cpu_s(etcd) - e0, 2)
    out["startup_checkpoint_archived_s"] = round(arch_s, 2)
    out["startup_checkpoint_archived_cpu_s"] = round(arch_cpu, 2)


def run() -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(_run(Path(tmp)))
    out["load_average_at_end"] = round(os.getloadavg()[0], 2)
    table: list[list[Any]] = [["measure", "full replay", "checkpoint", "target"]]
    table += [
        ["bytes per event in etcd (with seals)", "", out["bytes_per_event_with_seals"], "-"],
        [
            f"start-up, {out['events_in_log'] // 1000}k events in the log (s)",
            out["startup_full_replay_s"],
            out["startup_checkpoint_s"],
            "< 5",
        ],
        ["  its CPU-s", out["startup_full_replay_cpu_s"], out["startup_checkpoint_cpu_s"], ""],
        [
            "  etcd's CPU-s",
            out["startup_full_replay_etcd_cpu_s"],
            out["startup_checkpoint_etcd_cpu_s"],
            "",
        ],
        [
            "one page (1,000 events) from mid-log (s; etcd CPU-s)",
            "",
            f"{out['one_page_mid_log_s']} ({out['one_page_etcd_cpu_s']})",
            "-",
        ],
        [
            f"start-up after archiving all but {KEEP // 1000}k (s; CPU-s)",
            "",
            f"{out['startup_checkpoint_archived_s']} ({out['startup_checkpoint_archived_cpu_s']})",
            "< 5",
        ],
        [
            f"corral status, 2,000 instances (s, median of {STATUS_RUNS}; its CPU-s)",
            f"before: {out['cli_status_2000_before']}" if out["cli_status_2000_before"] else "",
            f"{out['cli_status_2000_median_s']} ({out['cli_status_2000_cpu_s']})",
            "< 0.3",
        ],
        [
            f"corral instance list, 2,000 instances (s, median of {STATUS_RUNS}; CPU-s)",
            "",
            f"{out['cli_instance_list_2000_median_s']} ({out['cli_instance_list_2000_cpu_s']})",
            "-",
        ],
        [
            f"corral status, {out['events_in_log'] // 1000}k events (s, median of 3; CPU-s)",
            "",
            f"{out['cli_status_1m_median_s']} ({out['cli_status_1m_cpu_s']})",
            "-",
        ],
        [
            "etcd db before / after archiving (MiB)",
            out["db_size_mib"],
            out["db_size_after_archive_mib"],
            "-",
        ],
        ["archive on disk (MiB)", "", out["archive_bytes_mib"], "-"],
        [
            "append / seal / archive the events (s)",
            "",
            f"{out['append_s']} / {out['seal_s']} (etcd CPU-s {out['seal_etcd_cpu_s']})"
            f" / {out['archive_s']}",
            "",
        ],
    ]
    return {**out, "table": table}
