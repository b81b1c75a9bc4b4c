"""Ganeti RAPI v2 instance routes: `/2/instances` and everything under it.

Creation (`POST /2/instances`, request version 1) appends `instance.declared`
(expected version: the name is free) and then submits the instance's start (or,
with `"start": false`, stop) job, marked as Ganeti's OP_INSTANCE_CREATE: that job
ends when the instance is placed, its DRBD pair built and the VM started, which
is what a Ganeti creation job waits for. Removal and tags append
`instance.removed` / `instance.updated` with expected versions. Power, migrate,
failover, replace-disks, grow-disk and activate-disks are corral jobs submitted
through `orchestrator.operations.submit_job`.

Must not run node commands or wait for convergence.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from events.ids import InstanceName, check_tag, new_event_id
from events.model import InstanceDeclared, InstanceRemoved, InstanceUpdated, JobKind, instance_key
from events.specs import DiskSpec, InstanceSpec, PowerState
from events.validation import SpecError, check_field
from orchestrator.cluster_report import instance_row
from orchestrator.desired.macs import used_macs, with_macs
from orchestrator.rapi import job_views, views
from orchestrator.rapi.context import Rapi, RapiError, reply
from orchestrator.rapi.instance_create import ganeti_size, parse_create, with_osparams
from orchestrator.rapi.job_index import REMOVE_CORRELATION, TAGS_CORRELATION
from orchestrator.reinstall import with_catalogue_image
from orchestrator.roles import Action, Principal


class InstanceRoutes:
    """`/2/instances` and everything under it, one method per resource."""

    def __init__(self, r: Rapi) -> None:
        self.r = r

    def _target(self, request: web.Request, action: Action) -> tuple[InstanceSpec, Principal]:
        spec = self.r.instance(request, request.match_info["name"])
        who = self.r.require(request, action, instance_tags=spec.tags)
        self.r.no_dry_run(request)
        return spec, who

    async def _job(
        self,
        request: web.Request,
        kind: JobKind,
        *,
        params: dict[str, str] | None = None,
        spec: InstanceSpec | None = None,
        who: Principal | None = None,
    ) -> web.Response:
        if spec is None or who is None:
            spec, who = self._target(request, Action.OPERATE)
        return await self.r.submit(
            request,
            kind=kind,
            target=spec.name,
            who=who,
            params=params,
            reason=f"{kind.value} via RAPI",
        )

    async def listing(self, request: web.Request) -> web.Response:
        state = self.r.state()
        names = views.listed_instances(state, self.r.principal(request))
        if not self.r.flag(request, "bulk"):
            return reply([{"id": n, "uri": f"/2/instances/{n}"} for n in names])
        now = self.r.clock()
        return web.Response(
            text=views.instances_json(state, names, now=now), content_type="application/json"
        )

    async def create(self, request: web.Request) -> web.Response:
        who = self.r.require(request, Action.ADMIN)
        self.r.no_dry_run(request)
        body = await self.r.body_dict(request)
        spec = parse_create(body)
        state = self.r.state()
        if spec.name in state.desired.instances:
            raise RapiError(409, f"instance {spec.name!r} already exists")
        for pinned in (spec.primary, spec.secondary):
            if pinned is not None:
                self.r.node(pinned, state=state)
        taken = used_macs(state.desired.instances)
        for i, nic in enumerate(spec.nics):
            if nic.mac in taken:
                raise RapiError(400, f"nics[{i}].mac {nic.mac} is already used in the cluster")
        spec = with_macs(spec, taken=taken, prefix=state.desired.policy.mac_prefix)
        spec = with_osparams(with_catalogue_image(spec, state), body.get("osparams"))
        key = instance_key(spec.name)
        revision = await self.r.store.append(
            [
                InstanceDeclared(
                    id=new_event_id(),
                    time=time.time(),
                    actor=who.name,
                    reason=self.r.reason(request, "created through RAPI"),
                    spec=spec,
                )
            ],
            expected={key: state.versions.get(key, 0)},
        )
        await self.r.caught_up(revision)
        kind = JobKind.INSTANCE_START if spec.power is PowerState.RUNNING else JobKind.INSTANCE_STOP
        return await self.r.submit(
            request,
            kind=kind,
            target=spec.name,
            who=who,
            params={job_views.GANETI_OP_PARAM: "OP_INSTANCE_CREATE"},
            reason="create via RAPI",
        )

    async def one(self, request: web.Request) -> web.Response:
        spec = self.r.instance(request, request.match_info["name"])
        return reply(views.instance(self.r.state(), spec.name, now=self.r.clock()))

    async def remove(self, request: web.Request) -> web.Response:
        spec = self.r.instance(request, request.match_info["name"])
        who = self.r.require(request, Action.ADMIN, instance_tags=spec.tags)
        self.r.no_dry_run(request)
        state = self.r.state()
        key = instance_key(spec.name)
        busy = [
            j.job_id
            for j in state.jobs.values()
            if key in j.targets and j.status in ("queued", "running", "canceling")
        ]
        if busy:
            raise RapiError(409, f"{key} has job {busy[0]} in progress")
        removed = InstanceRemoved(
            id=new_event_id(),
            time=time.time(),
            actor=who.name,
            reason=self.r.reason(request, "removed through RAPI"),
            correlation_id=REMOVE_CORRELATION,
            instance=spec.name,
        )
        return await self.r.append_change(
            removed,
            state=state,
            who=who,
            kind="instance.remove",
            detail=f"{spec.name} removed from the desired state",
        )

    async def info(self, request: web.Request) -> web.Response:
        spec = self.r.instance(request, request.match_info["name"])
        result = {spec.name: views.instance_info(self.r.state(), spec.name, now=self.r.clock())}
        gid = self.r.jobs.add_query(
            kind="instance.query",
            target=spec.name,
            actor=self.r.principal(request).name,
            result=result,
        )
        return reply(gid)

    async def startup(self, request: web.Request) -> web.Response:
        if self.r.flag(request, "no_remember"):
            raise RapiError(400, "no_remember is not supported: corral records desired power")
        return await self._job(request, JobKind.INSTANCE_START)

    async def shutdown(self, request: web.Request) -> web.Response:
        if self.r.flag(request, "no_remember"):
            raise RapiError(400, "no_remember is not supported: corral records desired power")
        return await self._job(request, JobKind.INSTANCE_STOP)

    async def reboot(self, request: web.Request) -> web.Response:
        return await self._job(request, JobKind.INSTANCE_REBOOT)

    async def migrate(self, request: web.Request) -> web.Response:
        spec, who = self._target(request, Action.OPERATE)
        body = await self.r.body_dict(request)
        _only_secondary(self.r, spec.name, body.get("target_node"))
        if body.get("cleanup"):
            raise RapiError(400, "cleanup is not needed: corral finishes or rolls back by itself")
        return await self._job(request, JobKind.INSTANCE_MIGRATE, spec=spec, who=who)

    async def failover(self, request: web.Request) -> web.Response:
        spec, who = self._target(request, Action.OPERATE)
        body = await self.r.body_dict(request)
        _only_secondary(self.r, spec.name, body.get("target_node"))
        if body.get("ignore_consistency"):
            raise RapiError(
                400,
                "ignore_consistency is not supported: corral fails over from a dead "
                "primary by itself once it is fenced (or `corral node confirm-off`)",
            )
        return await self._job(request, JobKind.INSTANCE_FAILOVER, spec=spec, who=who)

    async def replace_disks(self, request: web.Request) -> web.Response:
        spec, who = self._target(request, Action.OPERATE)
        body = await self.r.body_dict(request)
        args = {**{k: str(v) for k, v in body.items()}, **dict(request.query)}
        mode = args.get("mode", "replace_auto")
        params: dict[str, str]
        if mode == "replace_new_secondary":
            params = {"mode": "change-secondary"}
            if args.get("remote_node"):
                params["node"] = self.r.node(args["remote_node"]).name
        elif mode == "replace_on_secondary":
            params = {"mode": "secondary-rebuild"}
        elif mode == "replace_auto":
            # Ganeti replaces only faulty disks; with healthy ones it does nothing
            # but check them, which is what activate-disks waits for here.
            if not instance_row(self.r.state(), spec.name, now=self.r.clock()).degraded:
                return await self._job(request, JobKind.INSTANCE_ACTIVATE_DISKS, spec=spec, who=who)
            params = {"mode": "secondary-rebuild"}
        else:
            raise RapiError(
                400,
                f"mode {mode!r} is not supported: corral rebuilds the secondary "
                "(replace_on_secondary, replace_auto) or moves it (replace_new_secondary); "
                "to rebuild the primary, fail over first",
            )
        return await self._job(
            request, JobKind.INSTANCE_REPLACE_DISKS, params=params, spec=spec, who=who
        )

    async def grow(self, request: web.Request) -> web.Response:
        spec, who = self._target(request, Action.OPERATE)
        try:
            index = int(request.match_info["disk"])
        except ValueError:
            raise RapiError(404, "disk index must be a number") from None
        if not 0 <= index < len(spec.disks):
            raise RapiError(404, f"{spec.name} has no disk {index}")
        body = await self.r.body_dict(request)
        try:
            amount = check_field(DiskSpec, "size_mib", ganeti_size(body.get("amount")))
        except SpecError as exc:
            raise RapiError(400, f"amount: {exc.problems[0].message}") from None
        return await self._job(
            request,
            JobKind.INSTANCE_GROW_DISK,
            params={"disk": str(index), "amount_mib": str(amount)},
            spec=spec,
            who=who,
        )

    async def activate_disks(self, request: web.Request) -> web.Response:
        return await self._job(request, JobKind.INSTANCE_ACTIVATE_DISKS)

    async def tags_get(self, request: web.Request) -> web.Response:
        return reply(sorted(self.r.instance(request, request.match_info["name"]).tags))

    async def tags_change(self, request: web.Request) -> web.Response:
        spec, who = self._target(request, Action.ADMIN)
        given = request.query.getall("tag", [])
        if not given:
            raise RapiError(400, "name the tags with ?tag=...")
        tags = {check_tag(t) for t in given}
        adding = request.method == "PUT"
        new_tags = spec.tags | tags if adding else spec.tags - tags
        updated = InstanceUpdated(
            id=new_event_id(),
            time=time.time(),
            actor=who.name,
            reason=self.r.reason(request, f"tags {'added' if adding else 'removed'} via RAPI"),
            correlation_id=TAGS_CORRELATION,
            spec=replace(spec, tags=frozenset(new_tags)),
        )
        return await self.r.append_change(
            updated,
            state=self.r.state(),
            who=who,
            kind="instance.tags",
            detail=f"{'+' if adding else '-'}{','.join(sorted(tags))}",
        )

    def routes(self) -> list[web.RouteDef]:
        base = "/2/instances/{name}"
        return [
            web.get("/2/instances", self.listing),
            web.post("/2/instances", self.create),
            web.get(base, self.one),
            web.delete(base, self.remove),
            web.get(base + "/info", self.info),
            web.put(base + "/startup", self.startup),
            web.put(base + "/shutdown", self.shutdown),
            web.post(base + "/reboot", self.reboot),
            web.put(base + "/migrate", self.migrate),
            web.put(base + "/failover", self.failover),
            web.post(base + "/replace-disks", self.replace_disks),
            web.post(base + "/disk/{disk}/grow", self.grow),
            web.put(base + "/activate-disks", self.activate_disks),
            web.get(base + "/tags", self.tags_get),
            web.put(base + "/tags", self.tags_change),
            web.delete(base + "/tags", self.tags_change),
        ]


def instance_routes(r: Rapi) -> list[web.RouteDef]:
    return InstanceRoutes(r).routes()


def _only_secondary(r: Rapi, name: InstanceName, target_node: Any) -> None:
    if not target_node:
        return
    placement = r.state().placements.get(name)
    if placement is None or target_node != placement.secondary:
        raise RapiError(
            400,
            f"target_node must be {name}'s secondary"
            + (f" ({placement.secondary})" if placement else "")
            + ": a DRBD instance moves only to its secondary",
        )
