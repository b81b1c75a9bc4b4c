"""Ganeti RAPI v2 `POST /2/instances/NAME/reinstall`, as Ganeti's client sends it
(`ReinstallInstance(name, os=None, no_startup=False, osparams=None)`: the body
`{"start": true, "os": IMAGE}` of feature instance-reinstall-reqv1, or the older
query `?os=IMAGE&nostartup=1`): recorded through `orchestrator.reinstall` as an
`instance.reinstall` job (Ganeti's OP_INSTANCE_REINSTALL); `os` is an image of the
last applied file's catalogue. `start` (default true; `nostartup` in the older
query) is the run state after the write, recorded with the spec as Ganeti's
reinstall leaves it: started, or stopped. Ganeti's `osparams` are refused with 501
before anything is recorded.

Must not run node commands or wait for the job.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from events.model import JobKind
from events.specs import PowerState
from orchestrator.operations import OperationRefused
from orchestrator.rapi.context import Rapi, RapiError, refused_error
from orchestrator.reinstall import reinstall_instance
from orchestrator.roles import Action

_KEYS = frozenset({"start", "os", "osparams", "reason", "dry_run", "depends"})


def parse_reinstall(body: dict[str, Any], query: dict[str, str]) -> tuple[str | None, PowerState]:
    """The image asked for (None: the instance's own) and the run state after the
    write; RapiError naming the field."""
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise RapiError(400, f"reinstall: unknown parameters {', '.join(unknown)}")
    if body.get("osparams"):
        raise RapiError(501, "reinstall: osparams (Ganeti OS parameters) are not supported")
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
    os_name, power = parse_reinstall(await r.body_dict(request), dict(request.query))
    try:
        accepted = await reinstall_instance(
            r.store,
            r.state(),
            instance=spec.name,
            os_name=os_name,
            actor=who.name,
            reason=r.reason(request, ""),
            power=power,
        )
    except OperationRefused as exc:
        raise refused_error(exc) from None
    return await r.submitted(accepted, kind=JobKind.INSTANCE_REINSTALL, target=spec.name, who=who)


def instance_reinstall_routes(r: Rapi) -> list[web.RouteDef]:
    async def handler(request: web.Request) -> web.Response:
        return await reinstall(r, request)

    return [web.post("/2/instances/{name}/reinstall", handler)]
