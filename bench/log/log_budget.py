"""The log's budget: events per day of a steady 2,000-VM cluster on 40 nodes and
the days until etcd's 2 GiB quota without archiving, extrapolated plainly from
measured parts (each kept in the JSON):

- the steady rate of a converged 2,000-instance cluster left alone (probes and
  resyncs on simulated nodes) and the events of one node loss (about 50
  primaries): from the heal-at-size bench's run (bench/results/heal_scale.json);
- the probe events a real node's drifting free memory adds (the simulated nodes'
  does not drift): this host's own MemAvailable sampled once a second for a
  minute, counted as the old prober recorded it (any change) and as it does now
  (a move of 2% of the total), times 40 nodes and 86,400 probes a day;
- jobs: 50 live migrations a day (an assumption), each as many events as one
  migration appends here (counted on a 4-node lab after the cluster settles);
- one node loss a week;
- bytes per event: from the log bench's million events
  (bench/results/log_scale.json).

`make bench` runs heal_scale and log_scale first. A heal run at fewer
instances (CORRAL_BENCH_HEAL_INSTANCES, on a machine too loaded for 2,000) is
scaled up to 2,000 linearly, steady rate and node loss alike: an upper bound
(probes are per node, not per instance), and the table says so."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from reactors.prober import FREE_SPACE_STEP

NODES = 40
INSTANCES = 2000
QUOTA = 2 * 1024**3
JOBS_PER_DAY = 50
PROBE_SAMPLES = int(os.environ.get("CORRAL_BENCH_PROBE_SAMPLES", "60"))
RESULTS = Path(__file__).parents[1] / "results"


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


async def migration_events(tmp: Path, *, jobs: int = 3) -> float:
    """Events appended per live migration on a settled 4-node lab (the job, its
    steps, the placement and the nodes' new observations)."""
    from events.model import JobKind
    from orchestrator.operations import submit_job
    from tests.support.cluster.cluster_harness import cluster, instances

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


def _results(name: str) -> dict[str, Any]:
    """Another bench's figures from its last run at 2,000 instances."""
    path = RESULTS / f"{name}.json"
    doc: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if name == "heal_scale" and doc.get("nodes") != NODES:
        raise SystemExit(f"log_budget needs {path} from a run at {NODES} nodes")
    if name == "log_scale" and "bytes_per_event_with_seals" not in doc:
        raise SystemExit(f"log_budget needs {path}: run log_scale first")
    return doc


def run() -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    heal, log = _results("heal_scale"), _results("log_scale")
    rates = probe_change_rates(PROBE_SAMPLES)
    with tempfile.TemporaryDirectory() as tmp:
        per_migration = round(asyncio.run(migration_events(Path(tmp))), 1)
    bytes_per_event = log["bytes_per_event_with_seals"]
    scale = INSTANCES / heal["instances"]
    steady_per_s = heal["steady"]["events_per_s"] * scale
    loss = round(heal["events_node_loss"] * scale)
    parts = {
        "steady_simulated": round(steady_per_s * 86_400),
        "jobs": round(JOBS_PER_DAY * per_migration),
        "node_loss_per_7": round(loss / 7),
    }
    out: dict[str, Any] = {
        "heal_scale_started_at": heal.get("started_at"),
        "log_scale_started_at": log.get("started_at"),
        "heal_scale_instances": heal["instances"],
        "scaled_to_2000_by": round(scale, 2),
        "steady_events_per_s_simulated": round(steady_per_s, 3),
        "events_node_loss": loss,
        "events_per_migration": per_migration,
        "bytes_per_event_with_seals": bytes_per_event,
        "stored_bytes_per_event_live_cluster": heal["steady"]["stored_bytes_per_event"],
        "probe_change_rate_old": round(rates["old"], 3),
        "probe_change_rate_new": round(rates["new"], 3),
        "events_per_day_parts": parts,
    }
    for rule in ("old", "new"):
        probes = round(NODES * 86_400 * rates[rule])
        day = probes + sum(parts.values())
        out[f"drift_probe_events_per_day_{rule}"] = probes
        out[f"events_per_day_{rule}"] = day
        out[f"days_to_quota_{rule}"] = round(QUOTA / (day * bytes_per_event), 1)
    table: list[list[Any]] = [["measure (2,000 VMs / 40 nodes)", "old prober", "now"]]
    table += [
        [
            f"probes that append an event (this host's MemAvailable, {PROBE_SAMPLES} s)",
            out["probe_change_rate_old"],
            out["probe_change_rate_new"],
        ],
        [
            "  their events/day (40 nodes)",
            out["drift_probe_events_per_day_old"],
            out["drift_probe_events_per_day_new"],
        ],
        [
            f"steady simulated cluster, events/day (heal_scale at {heal['instances']}"
            f" instances x {round(scale, 2)})",
            "",
            parts["steady_simulated"],
        ],
        [f"{JOBS_PER_DAY} migrations/day, {per_migration} events each", "", parts["jobs"]],
        [
            f"one node loss a week ({loss} events), per day",
            "",
            parts["node_loss_per_7"],
        ],
        ["events/day", out["events_per_day_old"], out["events_per_day_new"]],
        ["bytes per event in etcd, seals included (log_scale)", bytes_per_event, bytes_per_event],
        [
            "days until etcd's 2 GiB quota, no archiving",
            out["days_to_quota_old"],
            out["days_to_quota_new"],
        ],
    ]
    return {**out, "table": table}
