"""Ganeti job ids for corral: every RAPI mutation answers with an integer job id,
and `/2/jobs/ID` must find the job again, after a restart too.

The id of a corral job is the etcd revision of its `job.submitted` append (one job
per append, so ids are unique and grow with time, as Ganeti's do). The fold's
`JobState.revision` cannot serve: it moves to the revision of every `job.updated`.
So this index keeps its own map, built from the log itself (an incremental scan of
`store.read_all` from the last revision it saw; the first request after a start
reads the log once) and fed directly by the server for its own submissions.

RAPI requests that corral records as plain desired-state events, not jobs (tags,
node role, instance removal), get the revision of that append as their job id;
the scan recognises them by actor (`rapi:...`) and, for instance events, by the
correlation ids below, and their status is derived from the state (a removal is
running until no node reports anything of the instance). `/2/instances/NAME/info`
answers at once with a finished in-memory job numbered from QUERY_JOB_BASE, far
above any revision, kept for QUERY_JOB_TTL_S and at most MAX_QUERY_JOBS of them
(oldest dropped first; kept in arrival order, so a purge looks only at the oldest).

Must not append events or change the state.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from events.ids import InstanceName, JobId
from events.model import InstanceRemoved, InstanceUpdated, JobSubmitted, NodeFlagsSet
from events.state import ClusterState
from events.store import EventStore
from orchestrator.rapi.job_views import GanetiJob, from_corral_job
from orchestrator.rapi.users import ACTOR_PREFIX
from reactors.naming import parse_disk_name

TAGS_CORRELATION = "rapi-tags"
REMOVE_CORRELATION = "rapi-remove"
QUERY_JOB_BASE = 10**12
QUERY_JOB_TTL_S = 300.0
MAX_QUERY_JOBS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeRecord:
    """A desired-state change made through RAPI, shown as a Ganeti job."""

    revision: int
    kind: str  # "instance.tags", "instance.remove" or "node.role"
    target: str
    actor: str
    time: float
    detail: str = ""


def instance_leftovers(state: ClusterState, name: str) -> list[str]:
    """Where nodes still report a VM, DRBD resource or volume of `name`."""
    found = []
    for node, obs in sorted(state.observed.items()):
        if any(vm.name == name for vm in obs.vms):
            found.append(f"vm on {node}")
        for res in obs.drbd:
            parsed = parse_disk_name(res.name)
            if parsed is not None and parsed[0] == name:
                found.append(f"drbd {res.name} on {node}")
        for vol in obs.volumes:
            parsed = parse_disk_name(vol.name)
            if parsed is not None and parsed[0] == name:
                found.append(f"volume {vol.name} on {node}")
    return found


def change_job(rec: ChangeRecord, state: ClusterState) -> GanetiJob:
    status, ended = "success", rec.time
    log: tuple[tuple[float, str], ...] = ((rec.time, f"recorded: {rec.detail}"),)
    ended_at: float | None = ended
    if rec.kind == "instance.remove" and InstanceName(rec.target) not in state.desired.instances:
        left = instance_leftovers(state, rec.target)
        if left:
            status, ended_at = "running", None
            log = (*log, (rec.time, "waiting for the nodes to drop: " + ", ".join(left[:6])))
    return GanetiJob(
        id=rec.revision,
        kind=rec.kind,
        target=rec.target,
        params=(),
        status=status,
        actor=rec.actor,
        received_at=rec.time,
        started_at=rec.time,
        ended_at=ended_at,
        log=log,
    )


class JobIndex:
    """Integer Ganeti job ids <-> corral jobs and RAPI changes."""

    def __init__(self, *, store: EventStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._gid: dict[JobId, int] = {}
        self._by_gid: dict[int, JobId | ChangeRecord] = {}
        self._scanned = 0
        self._lock = asyncio.Lock()
        self._queries: OrderedDict[int, GanetiJob] = OrderedDict()
        self._query_ids = itertools.count(QUERY_JOB_BASE)

    # ------------------------------------------------------------------ feeding

    def add_job(self, job_id: JobId, revision: int) -> None:
        self._gid[job_id] = revision
        self._by_gid[revision] = job_id

    def add_change(self, rec: ChangeRecord) -> None:
        self._by_gid[rec.revision] = rec

    def add_query(self, *, kind: str, target: str, actor: str, result: Any) -> int:
        now = self._clock()
        while self._queries and (
            len(self._queries) >= MAX_QUERY_JOBS
            or next(iter(self._queries.values())).received_at < now - QUERY_JOB_TTL_S
        ):
            self._queries.popitem(last=False)
        gid = next(self._query_ids)
        self._queries[gid] = GanetiJob(
            id=gid,
            kind=kind,
            target=target,
            params=(),
            status="success",
            actor=actor,
            received_at=now,
            started_at=now,
            ended_at=now,
            log=((now, "answered from the folded state"),),
            result=result,
        )
        return gid

    async def refresh(self) -> None:
        """Read the log from the last revision seen and index what is new."""
        async with self._lock:
            async for revision, event in self._store.read_all(from_revision=self._scanned + 1):
                self._scanned = max(self._scanned, revision)
                if isinstance(event, JobSubmitted):
                    self.add_job(event.job_id, revision)
                    continue
                if not event.actor.startswith(ACTOR_PREFIX):
                    continue
                rec: ChangeRecord | None = None
                if isinstance(event, NodeFlagsSet):
                    detail = ", ".join(
                        f"{k}={v}"
                        for k, v in (("drained", event.drained), ("offline", event.offline))
                        if v is not None
                    )
                    rec = ChangeRecord(
                        revision=revision,
                        kind="node.role",
                        target=event.node,
                        actor=event.actor,
                        time=event.time,
                        detail=detail,
                    )
                elif (
                    isinstance(event, InstanceUpdated) and event.correlation_id == TAGS_CORRELATION
                ):
                    rec = ChangeRecord(
                        revision=revision,
                        kind="instance.tags",
                        target=event.spec.name,
                        actor=event.actor,
                        time=event.time,
                        detail="tags " + ",".join(sorted(event.spec.tags)),
                    )
                elif (
                    isinstance(event, InstanceRemoved)
                    and event.correlation_id == REMOVE_CORRELATION
                ):
                    rec = ChangeRecord(
                        revision=revision,
                        kind="instance.remove",
                        target=event.instance,
                        actor=event.actor,
                        time=event.time,
                        detail=f"{event.instance} removed from the desired state",
                    )
                if rec is not None:
                    self.add_change(rec)

    # ------------------------------------------------------------------ reading

    def gid_of(self, job_id: JobId) -> int | None:
        return self._gid.get(job_id)

    def missing(self, state: ClusterState) -> bool:
        return any(j not in self._gid for j in state.jobs)

    def get(self, gid: int, state: ClusterState) -> GanetiJob | None:
        if gid in self._queries:
            return self._queries[gid]
        ref = self._by_gid.get(gid)
        if ref is None:
            return None
        if isinstance(ref, ChangeRecord):
            return change_job(ref, state)
        job = state.jobs.get(ref)
        if job is None:  # submitted, not folded yet
            return None
        return from_corral_job(gid, job, state)

    def all(self, state: ClusterState) -> list[GanetiJob]:
        out = []
        for gid in sorted(self._by_gid):
            got = self.get(gid, state)
            if got is not None:
                out.append(got)
        out.extend(self._queries[g] for g in sorted(self._queries))
        return out
