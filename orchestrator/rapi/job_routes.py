"""Ganeti RAPI v2 job routes: `/2/jobs`, `/2/jobs/ID` (GET, DELETE to
cancel a queued job) and `/2/jobs/ID/wait` (Ganeti's long poll: up to 10 s for a
change of the asked fields or new log entries; `null` when nothing changed).

Must not append anything but a cancel request (`orchestrator.operations.cancel_job`).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from events.ids import InstanceName
from events.state import ClusterState
from orchestrator.operations import OperationRefused, cancel_job
from orchestrator.rapi import job_views
from orchestrator.rapi.context import WAIT_TIMEOUT_S, Rapi, RapiError, reply
from orchestrator.roles import Action, sees_instance


class JobRoutes:
    """`/2/jobs` and one job, as Ganeti's clients read them."""

    def __init__(self, r: Rapi) -> None:
        self.r = r

    def visible(self, request: web.Request, job: job_views.GanetiJob, state: ClusterState) -> bool:
        who = self.r.principal(request)
        if not who.scoped:
            return True
        spec = state.desired.instances.get(InstanceName(job.target))
        return (
            job.kind.startswith("instance.")
            and spec is not None
            and sees_instance(who, tags=spec.tags)
        )

    async def find(self, request: web.Request) -> tuple[job_views.GanetiJob, ClusterState]:
        try:
            gid = int(request.match_info["job"])
        except ValueError:
            raise RapiError(404, f"job {request.match_info['job']!r} not found") from None
        state = self.r.state()
        got = self.r.jobs.get(gid, state)
        if got is None:
            await self.r.jobs.refresh()
            state = self.r.state()
            got = self.r.jobs.get(gid, state)
        if got is None or not self.visible(request, got, state):
            raise RapiError(404, f"job {gid} not found")
        return got, state

    async def jobs(self, request: web.Request) -> web.Response:
        state = self.r.state()
        if self.r.jobs.missing(state):
            await self.r.jobs.refresh()
        found = [j for j in self.r.jobs.all(state) if self.visible(request, j, state)]
        if self.r.flag(request, "bulk"):
            return reply([job_views.job(j, job_views.J_FIELDS_BULK) for j in found])
        return reply([{"id": j.id, "uri": f"/2/jobs/{j.id}"} for j in found])

    async def one(self, request: web.Request) -> web.Response:
        got, _ = await self.find(request)
        return reply(job_views.job(got))

    async def cancel(self, request: web.Request) -> web.Response:
        got, state = await self.find(request)
        spec = state.desired.instances.get(InstanceName(got.target))
        who = self.r.require(
            request, Action.OPERATE, instance_tags=spec.tags if spec is not None else None
        )
        corral_id = next((j for j in state.jobs if self.r.jobs.gid_of(j) == got.id), None)
        if corral_id is None or got.final:
            return reply([False, f"Job {got.id} is {got.status} and can't be canceled"])
        try:
            await cancel_job(
                self.r.store,
                state,
                job_id=corral_id,
                actor=who.name,
                reason=self.r.reason(request, "canceled through RAPI"),
            )
        except OperationRefused as exc:
            return reply([False, str(exc)])
        return reply([True, f"Job {got.id} will be canceled"])

    async def wait(self, request: web.Request) -> web.Response:
        self.r.require(request, Action.OPERATE)  # Ganeti: write access only (it blocks)
        body = await self.r.body_dict(request)
        fields = body.get("fields")
        prev_info = body.get("previous_job_info")
        prev_serial = body.get("previous_log_serial")
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise RapiError(400, "The 'fields' parameter should be a list")
        unknown = [f for f in fields if f not in job_views.JOB_FIELDS_KNOWN]
        if unknown:
            raise RapiError(400, f"unknown job fields: {', '.join(unknown)}")
        if prev_info is not None and not isinstance(prev_info, list):
            raise RapiError(400, "The 'previous_job_info' parameter should be a list")
        if prev_serial is not None and (
            isinstance(prev_serial, bool) or not isinstance(prev_serial, int)
        ):
            raise RapiError(400, "The 'previous_log_serial' parameter should be a number")
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while True:
            got, _ = await self.find(request)
            job_info = [job_views.job_field(got, f) for f in fields]
            entries = [e for e in job_views.oplog(got) if prev_serial is None or e[0] > prev_serial]
            if got.final or entries or job_info != prev_info:
                return reply({"job_info": job_info, "log_entries": entries})
            if time.monotonic() > deadline:
                return reply(None)
            await asyncio.sleep(0.2)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/2/jobs", self.jobs),
            web.get("/2/jobs/{job}", self.one),
            web.delete("/2/jobs/{job}", self.cancel),
            web.get("/2/jobs/{job}/wait", self.wait),
            web.put("/2/jobs/{job}/wait", self.wait),
        ]


def job_routes(r: Rapi) -> list[web.RouteDef]:
    return JobRoutes(r).routes()
