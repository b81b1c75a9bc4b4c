"""`corral job list|info|watch|cancel`, and how every command that records
something reports it: the revision, the job id, and with --wait the job followed
until it ends (its log printed as it grows).

Must not act on nodes.
"""

from __future__ import annotations

import argparse
import time

from events.ids import JobId
from events.model import JOB_FINAL_STATUSES
from events.state import ClusterState, JobState
from events.store import EventStore
from orchestrator.cli.context import UsageError, actor, current_state, print_json, table
from orchestrator.cluster_report import job_json
from orchestrator.operations import Accepted, cancel_job


async def job_command(args: argparse.Namespace, store: EventStore, state: ClusterState) -> int:
    if args.action == "list":
        jobs = sorted(state.jobs.values(), key=lambda j: j.job_id)
        if not args.all:
            jobs = jobs[-50:]
        if args.json:
            print_json([job_json(j, with_log=False) for j in jobs])
            return 0
        print(
            table(
                [
                    (j.job_id, j.kind, " ".join(j.targets), j.status.value, j.actor, j.error[:60])
                    for j in jobs
                ],
                header=("JOB", "KIND", "TARGETS", "STATUS", "ACTOR", "ERROR"),
            )
        )
        return 0
    job = state.jobs.get(JobId(args.job_id))
    if job is None:
        raise UsageError(f"no job {args.job_id!r}")
    if args.action == "info":
        d = job_json(job, with_log=True)
        if args.json:
            print_json(d)
        else:
            for key in ("job_id", "kind", "targets", "status", "actor", "reason", "error"):
                print(f"{key:<10} {d[key]}")
            for entry in d["log"]:
                print(
                    f"  {time.strftime('%H:%M:%S', time.localtime(entry['time']))} {entry['line']}"
                )
        return 0
    if args.action == "cancel":
        accepted = await cancel_job(store, state, job_id=job.job_id, actor=actor(store))
        return await report_accepted(args, store, accepted)
    return await watch_job(store, state, job.job_id, quiet=args.json)


async def watch_job(store: EventStore, state: ClusterState, job_id: JobId, *, quiet: bool) -> int:
    """Print the job's log as it grows until it ends; exit 0 on success."""
    from events.loading import follow

    shown = 0

    def show(st: ClusterState) -> JobState | None:
        nonlocal shown
        job = st.jobs.get(job_id)
        if job is None:
            return None
        for t, line in job.log[shown:]:
            if not quiet:
                print(f"{time.strftime('%H:%M:%S', time.localtime(t))} {line}", flush=True)
        shown = len(job.log)
        return job

    job = show(state)
    if job is None or job.status.value not in JOB_FINAL_STATUSES:
        async for _, now_state in follow(store, state):
            job = show(now_state)
            if job is not None and job.status.value in JOB_FINAL_STATUSES:
                break
    assert job is not None
    if quiet:
        print_json(job_json(job, with_log=True))
    else:
        print(f"job {job_id}: {job.status.value}" + (f": {job.error}" if job.error else ""))
    return 0 if job.status.value == "success" else 1


async def report_accepted(args: argparse.Namespace, store: EventStore, accepted: Accepted) -> int:
    if getattr(args, "wait", False) and accepted.job_id is not None:
        state = await current_state(store)
        if not args.json:
            print(f"job {accepted.job_id} accepted at revision {accepted.revision}")
        return await watch_job(store, state, accepted.job_id, quiet=args.json)
    if args.json:
        print_json(
            {
                "accepted": True,
                "revision": accepted.revision,
                "job_id": accepted.job_id,
                "event_ids": list(accepted.event_ids),
            }
        )
    elif accepted.job_id:
        print(
            f"job {accepted.job_id} accepted (revision {accepted.revision}); "
            f"follow it with `corral job watch {accepted.job_id}`"
        )
    else:
        print(f"recorded at revision {accepted.revision}")
    return 0
