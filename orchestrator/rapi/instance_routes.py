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
from events.validation import SpecError, check_field, validate
from orchestrator.cluster_report import instance_row
from orchestrator.rapi import views
from orchestrator.rapi.context import Rapi, RapiError, reply
from orchestrator.rapi.job_index import REMOVE_CORRELATION, TAGS_CORRELATION, ChangeRecord
from orchestrator.roles import Action, Principal

_CREATE_IGNORED = frozenset(
    {
        "mode",
        "name",
        "instance_name",
        "disk_template",
        "disks",
        "nics",
        "beparams",
        "os",
        "os_type",
        "pnode",
        "snode",
        "iallocator",
        "start",
        "tags",
        "hypervisor",
        "hvparams",
        "osparams",
        "name_check",
        "ip_check",
        "conflicts_check",
        "wait_for_sync",
        "no_install",
        "dry_run",
        "__version__",
    }
)


def _size(value: Any) -> Any:
    """Ganeti's sizes: MiB, or a string with M/G/T; anything else is left for the
    model to refuse."""
    if isinstance(value, str) and value.strip():
        text = value.strip().upper().removesuffix("B")
        scale = {"M": 1, "G": 1024, "T": 1024 * 1024}.get(text[-1:], 0)
        digits = text[:-1] if scale else text
        if digits.isascii() and digits.isdigit() and len(digits) <= 15:
            return int(digits) * (scale or 1)
    return value


# The model's field paths in Ganeti's words.
_GANETI_FIELDS = {
    "memory_mib": "beparams.memory",
    "vcpus": "beparams.vcpus",
    "auto_balance": "beparams.auto_balance",
    "primary": "pnode",
    "secondary": "snode",
    "power": "start",
}


def _ganeti_path(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "body"
    head = _GANETI_FIELDS.get(str(loc[0]), str(loc[0]))
    out = head
    for part in loc[1:]:
        out += (
            f"[{part}]" if isinstance(part, int) else f".{'size' if part == 'size_mib' else part}"
        )
    return out


def _nic(n: Any) -> Any:
    if not isinstance(n, dict):
        return n
    mac = n.get("mac")
    return {
        "mac": None if mac in (None, "", "auto", "generate") else mac,
        "link": n.get("link") or "br0",
        "mode": n.get("mode") or "bridged",
        "ip": n.get("ip") or None,
    }


def parse_create(body: dict[str, Any]) -> InstanceSpec:
    """An InstanceSpec from a Ganeti version-1 creation request, held to the same
    model as a desired-state file (`events.validation`); RapiError 400 naming every
    field at fault, or what corral does not do (import, other disk templates, ...)."""
    if body.get("__version__") != 1:
        raise RapiError(400, "only request version 1 is supported (__version__: 1)")
    unknown = sorted(set(body) - _CREATE_IGNORED)
    if unknown:
        raise RapiError(400, f"unsupported creation parameters: {', '.join(unknown)}")
    if body.get("mode") != "create":
        raise RapiError(400, f"mode {body.get('mode')!r} is not supported (only 'create')")
    if body.get("disk_template", "drbd") != "drbd":
        raise RapiError(400, "corral instances use the drbd disk template only")
    if body.get("hypervisor", "kvm") != "kvm":
        raise RapiError(400, "corral runs kvm only")
    be = body.get("beparams") or {}
    if not isinstance(be, dict):
        raise RapiError(400, "beparams must be an object")
    disks = body.get("disks")
    nics = body.get("nics") or []
    start = body.get("start", True)
    plain = {
        "name": body.get("name") or body.get("instance_name"),
        "memory_mib": _size(be.get("maxmem", be.get("memory", 128))),
        "vcpus": be.get("vcpus", 1),
        "disks": (
            [{"size_mib": _size(d.get("size"))} if isinstance(d, dict) else d for d in disks]
            if isinstance(disks, list)
            else disks
        ),
        "os": body.get("os") or body.get("os_type") or "none",
        "nics": [_nic(n) for n in nics] if isinstance(nics, list) else nics,
        "tags": body.get("tags") or [],
        "power": PowerState.RUNNING if start is True else PowerState.STOPPED,
        "primary": body.get("pnode") or None,
        "secondary": body.get("snode") or None,
        "auto_balance": be.get("auto_balance", True),
    }
    if not isinstance(start, bool):
        raise RapiError(400, "start: expected true or false")
    try:
        return validate(InstanceSpec, plain)
    except SpecError as exc:
        raise RapiError(
            400, "; ".join(f"{_ganeti_path(p.loc)}: {p.message}" for p in exc.problems)
        ) from None


def instance_routes(r: Rapi) -> list[web.RouteDef]:
    def target(request: web.Request, action: Action) -> tuple[InstanceSpec, Principal]:
        spec = r.instance(request, request.match_info["name"])
        who = r.require(request, action, instance_tags=spec.tags)
        r.no_dry_run(request)
        return spec, who

    async def job(
        request: web.Request,
        kind: JobKind,
        *,
        params: dict[str, str] | None = None,
        spec: InstanceSpec | None = None,
        who: Principal | None = None,
    ) -> web.Response:
        if spec is None or who is None:
            spec, who = target(request, Action.OPERATE)
        return await r.submit(
            request,
            kind=kind,
            target=spec.name,
            who=who,
            params=params,
            reason=f"{kind.value} via RAPI",
        )

    async def listing(request: web.Request) -> web.Response:
        state = r.state()
        names = views.listed_instances(state, r.principal(request))
        if not r.flag(request, "bulk"):
            return reply([{"id": n, "uri": f"/2/instances/{n}"} for n in names])
        now = r.clock()
        return web.Response(
            text=views.instances_json(state, names, now=now), content_type="application/json"
        )

    async def create(request: web.Request) -> web.Response:
        who = r.require(request, Action.ADMIN)
        r.no_dry_run(request)
        spec = parse_create(await r.body_dict(request))
        state = r.state()
        if spec.name in state.desired.instances:
            raise RapiError(409, f"instance {spec.name!r} already exists")
        for pinned in (spec.primary, spec.secondary):
            if pinned is not None:
                r.node(pinned, state=state)
        key = instance_key(spec.name)
        revision = await r.store.append(
            [
                InstanceDeclared(
                    id=new_event_id(),
                    time=time.time(),
                    actor=who.name,
                    reason=r.reason(request, "created through RAPI"),
                    spec=spec,
                )
            ],
            expected={key: state.versions.get(key, 0)},
        )
        await r.caught_up(revision)
        kind = JobKind.INSTANCE_START if spec.power is PowerState.RUNNING else JobKind.INSTANCE_STOP
        return await r.submit(
            request,
            kind=kind,
            target=spec.name,
            who=who,
            params={views.GANETI_OP_PARAM: "OP_INSTANCE_CREATE"},
            reason="create via RAPI",
        )

    async def one(request: web.Request) -> web.Response:
        spec = r.instance(request, request.match_info["name"])
        return reply(views.instance(r.state(), spec.name, now=r.clock()))

    async def remove(request: web.Request) -> web.Response:
        spec = r.instance(request, request.match_info["name"])
        who = r.require(request, Action.ADMIN, instance_tags=spec.tags)
        r.no_dry_run(request)
        state = r.state()
        key = instance_key(spec.name)
        busy = [
            j.job_id
            for j in state.jobs.values()
            if key in j.targets and j.status in ("queued", "running", "canceling")
        ]
        if busy:
            raise RapiError(409, f"{key} has job {busy[0]} in progress")
        revision = await r.store.append(
            [
                InstanceRemoved(
                    id=new_event_id(),
                    time=time.time(),
                    actor=who.name,
                    reason=r.reason(request, "removed through RAPI"),
                    correlation_id=REMOVE_CORRELATION,
                    instance=spec.name,
                )
            ],
            expected={key: state.versions.get(key, 0)},
        )
        return await r.recorded_change(
            ChangeRecord(
                revision=revision,
                kind="instance.remove",
                target=spec.name,
                actor=who.name,
                time=r.clock(),
                detail=f"{spec.name} removed from the desired state",
            )
        )

    async def info(request: web.Request) -> web.Response:
        spec = r.instance(request, request.match_info["name"])
        result = {spec.name: views.instance_info(r.state(), spec.name, now=r.clock())}
        gid = r.jobs.add_query(
            kind="instance.query", target=spec.name, actor=r.principal(request).name, result=result
        )
        return reply(gid)

    async def startup(request: web.Request) -> web.Response:
        if r.flag(request, "no_remember"):
            raise RapiError(400, "no_remember is not supported: corral records desired power")
        return await job(request, JobKind.INSTANCE_START)

    async def shutdown(request: web.Request) -> web.Response:
        if r.flag(request, "no_remember"):
            raise RapiError(400, "no_remember is not supported: corral records desired power")
        return await job(request, JobKind.INSTANCE_STOP)

    async def reboot(request: web.Request) -> web.Response:
        return await job(request, JobKind.INSTANCE_REBOOT)

    async def migrate(request: web.Request) -> web.Response:
        spec, who = target(request, Action.OPERATE)
        body = await r.body_dict(request)
        _only_secondary(r, spec.name, body.get("target_node"))
        if body.get("cleanup"):
            raise RapiError(400, "cleanup is not needed: corral finishes or rolls back by itself")
        return await job(request, JobKind.INSTANCE_MIGRATE, spec=spec, who=who)

    async def failover(request: web.Request) -> web.Response:
        spec, who = target(request, Action.OPERATE)
        body = await r.body_dict(request)
        _only_secondary(r, spec.name, body.get("target_node"))
        if body.get("ignore_consistency"):
            raise RapiError(
                400,
                "ignore_consistency is not supported: corral fails over from a dead "
                "primary by itself once it is fenced (or `corral node confirm-off`)",
            )
        return await job(request, JobKind.INSTANCE_FAILOVER, spec=spec, who=who)

    async def replace_disks(request: web.Request) -> web.Response:
        spec, who = target(request, Action.OPERATE)
        body = await r.body_dict(request)
        args = {**{k: str(v) for k, v in body.items()}, **dict(request.query)}
        mode = args.get("mode", "replace_auto")
        params: dict[str, str]
        if mode == "replace_new_secondary":
            params = {"mode": "change-secondary"}
            if args.get("remote_node"):
                params["node"] = r.node(args["remote_node"]).name
        elif mode == "replace_on_secondary":
            params = {"mode": "secondary-rebuild"}
        elif mode == "replace_auto":
            # Ganeti replaces only faulty disks; with healthy ones it does nothing
            # but check them, which is what activate-disks waits for here.
            if not instance_row(r.state(), spec.name, now=r.clock()).degraded:
                return await job(request, JobKind.INSTANCE_ACTIVATE_DISKS, spec=spec, who=who)
            params = {"mode": "secondary-rebuild"}
        else:
            raise RapiError(
                400,
                f"mode {mode!r} is not supported: corral rebuilds the secondary "
                "(replace_on_secondary, replace_auto) or moves it (replace_new_secondary); "
                "to rebuild the primary, fail over first",
            )
        return await job(request, JobKind.INSTANCE_REPLACE_DISKS, params=params, spec=spec, who=who)

    async def grow(request: web.Request) -> web.Response:
        spec, who = target(request, Action.OPERATE)
        try:
            index = int(request.match_info["disk"])
        except ValueError:
            raise RapiError(404, "disk index must be a number") from None
        if not 0 <= index < len(spec.disks):
            raise RapiError(404, f"{spec.name} has no disk {index}")
        body = await r.body_dict(request)
        try:
            amount = check_field(DiskSpec, "size_mib", _size(body.get("amount")))
        except SpecError as exc:
            raise RapiError(400, f"amount: {exc.problems[0].message}") from None
        return await job(
            request,
            JobKind.INSTANCE_GROW_DISK,
            params={"disk": str(index), "amount_mib": str(amount)},
            spec=spec,
            who=who,
        )

    async def activate_disks(request: web.Request) -> web.Response:
        return await job(request, JobKind.INSTANCE_ACTIVATE_DISKS)

    async def tags_get(request: web.Request) -> web.Response:
        return reply(sorted(r.instance(request, request.match_info["name"]).tags))

    async def tags_change(request: web.Request) -> web.Response:
        spec, who = target(request, Action.ADMIN)
        given = request.query.getall("tag", [])
        if not given:
            raise RapiError(400, "name the tags with ?tag=...")
        tags = {check_tag(t) for t in given}
        adding = request.method == "PUT"
        new_tags = spec.tags | tags if adding else spec.tags - tags
        state = r.state()
        key = instance_key(spec.name)
        revision = await r.store.append(
            [
                InstanceUpdated(
                    id=new_event_id(),
                    time=time.time(),
                    actor=who.name,
                    reason=r.reason(request, f"tags {'added' if adding else 'removed'} via RAPI"),
                    correlation_id=TAGS_CORRELATION,
                    spec=replace(spec, tags=frozenset(new_tags)),
                )
            ],
            expected={key: state.versions.get(key, 0)},
        )
        return await r.recorded_change(
            ChangeRecord(
                revision=revision,
                kind="instance.tags",
                target=spec.name,
                actor=who.name,
                time=r.clock(),
                detail=f"{'+' if adding else '-'}{','.join(sorted(tags))}",
            )
        )

    base = "/2/instances/{name}"
    return [
        web.get("/2/instances", listing),
        web.post("/2/instances", create),
        web.get(base, one),
        web.delete(base, remove),
        web.get(base + "/info", info),
        web.put(base + "/startup", startup),
        web.put(base + "/shutdown", shutdown),
        web.post(base + "/reboot", reboot),
        web.put(base + "/migrate", migrate),
        web.put(base + "/failover", failover),
        web.post(base + "/replace-disks", replace_disks),
        web.post(base + "/disk/{disk}/grow", grow),
        web.put(base + "/activate-disks", activate_disks),
        web.get(base + "/tags", tags_get),
        web.put(base + "/tags", tags_change),
        web.delete(base + "/tags", tags_change),
    ]


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
