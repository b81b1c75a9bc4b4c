"""Ganeti RAPI v2 `POST /2/instances/NAME/reinstall`, as Ganeti's client sends it
(`ReinstallInstance(name, os=None, no_startup=False, osparams=None)`: the body
`{"start": true, "os": IMAGE, "osparams": {...}}` of feature
instance-reinstall-reqv1, or the older query `?os=IMAGE&nostartup=1`): recorded
through `orchestrator.reinstall` as an `instance.reinstall` job (Ganeti's
OP_INSTANCE_REINSTALL); `os` is an image or OS definition of the last applied
file's catalogue. `start` (default true; `nostartup` in the older query) is the
run state after the write, recorded with the spec as Ganeti's reinstall leaves
it: started, or stopped. `osparams` go over the catalogue entry's parameters of
the instance's (or the new `os`'s) Ganeti OS definition, as a RAPI create's do
(`instance_create.with_osparams`), recorded with the job's spec; for an image,
or a bad parameter, 400 before anything is recorded.

Must not run node commands or wait for the job.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from events.model import JobKind
from events.specs import PowerState
from orchestrator.operations import OperationRefused
from orchestrator.rapi.context import Rapi, RapiError, refused_error
from orchestrator.rapi.instance_create import with_osparams
from orchestrator.reinstall import record_reinstall, reinstalled
from orchestrator.roles import Action

_KEYS = frozenset({"start", "os", "osparams", "reason", "dry_run", "depends"})


def parse_reinstall(body: dict[str, Any], query: dict[str, str]) -> tuple[str | None, PowerState]:
    """The image asked for (None: the instance's own) and the run state after the
    write; RapiError naming the field (`osparams` are checked later, against the image)."""
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise RapiError(400, f"reinstall: unknown parameters {', '.join(unknown)}")
    start = body.get("start", True)
    if not isinstance(start, bool):
        raise RapiError(400, "reinstall: start must be true or false")
    if query.get("nostartup") in ("1", "true"):
        start = False
    os_name = body.get("os", query.get("os"))
    if os_name is not None and (not isinstance(os_name, str) or not os_name):
        raise RapiError(400, "reinstall: os must be an image name")
    return os_name, PowerState.RUNNING if start else PowerState.STOPPED


async def reinstall(r: Rapi, request: web.Request) -> web.Response:
    spec = r.instance(request, request.match_info["name"])
    who = r.require(request, Action.ADMIN, instance_tags=spec.tags)
    r.no_dry_run(request)
    body = await r.body_dict(request)
    os_name, power = parse_reinstall(body, dict(request.query))
    state = r.state()
    try:
        old, new = reinstalled(state, instance=spec.name, os_name=os_name, power=power)
        new = with_osparams(new, body.get("osparams"))
        accepted = await record_reinstall(
            r.store, state, spec=old, new=new, actor=who.name, reason=r.reason(request, "")
        )
    except OperationRefused as exc:
        raise refused_error(exc) from None
    return await r.submitted(accepted, kind=JobKind.INSTANCE_REINSTALL, target=spec.name, who=who)


def instance_reinstall_routes(r: Rapi) -> list[web.RouteDef]:
    async def handler(request: web.Request) -> web.Response:
        return await reinstall(r, request)

    return [web.post("/2/instances/{name}/reinstall", handler)]
