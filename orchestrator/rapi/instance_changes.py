"""Ganeti RAPI v2 `PUT /2/instances/NAME/modify`, as Ganeti's client sends it
(`ModifyInstance(name, beparams={...}, force=...)`): memory (`maxmem`, or the older
`memory`; `minmem` only equal to it, corral gives an instance one memory size),
`vcpus` and `hvparams` (Ganeti's kvm names; "default" unsets one), recorded
through `orchestrator.instance_changes` as an `instance.modify` job (Ganeti's
OP_INSTANCE_SET_PARAMS) and refused with Ganeti's 400 when the change
does not fit its nodes, unless `force`. Parameters corral does not change here
(`nics`, `disks`, `os_name`, ...) are refused with 501 naming them,
before anything is recorded.

`PUT /2/instances/NAME/rename` (`RenameInstance(name, new_name, ip_check=,
name_check=)`) records an `instance.rename` job (OP_INSTANCE_RENAME); corral checks
no DNS, so `ip_check`/`name_check` true are refused with 501 rather than ignored.

Must not run node commands or wait for the job.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from events.model import JobKind
from orchestrator.instance_changes import modify_instance, rename_instance
from orchestrator.operations import OperationRefused
from orchestrator.rapi.context import Rapi, RapiError, refused_error
from orchestrator.roles import Action

_BEPARAMS = frozenset({"memory", "maxmem", "minmem", "vcpus", "auto_balance"})
# Body keys Ganeti's client may send that change nothing here.
_IGNORED = frozenset({"reason", "dry_run", "wait_for_sync", "depends"})


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RapiError(400, f"beparams.{name} must be a whole number, got {value!r}")
    return value


def _memory(be: dict[str, Any]) -> int | None:
    """The one memory size a beparams dict asks for (MiB), or None."""
    sizes = {k: _whole(k, be[k]) for k in ("memory", "maxmem", "minmem") if k in be}
    if len(set(sizes.values())) > 1:
        raise RapiError(
            400,
            "beparams: corral gives an instance one memory size; "
            f"memory/maxmem/minmem must agree (got {sizes})",
        )
    return next(iter(sizes.values()), None)


def parse_hvparams(body: dict[str, Any]) -> dict[str, str]:
    """`hvparams` of a modify body as strings (Ganeti's client sends them as given);
    each is checked by `orchestrator.instance_changes`."""
    hv = body.get("hvparams") or {}
    if not isinstance(hv, dict):
        raise RapiError(400, "hvparams must be an object")
    bad = sorted(k for k, v in hv.items() if not isinstance(v, str))
    if bad:
        raise RapiError(400, f"hvparams.{bad[0]} must be a string, got {hv[bad[0]]!r}")
    return dict(hv)


def parse_modify(body: dict[str, Any]) -> tuple[int | None, int | None, bool]:
    """(memory MiB, vcpus, force) from a modify body; RapiError naming the field."""
    unknown = sorted(set(body) - {"beparams", "hvparams", "force"} - _IGNORED)
    if unknown:
        raise RapiError(
            501,
            f"modify: {', '.join(unknown)} cannot be changed through this RAPI "
            "(memory and vcpus can, in beparams, and hvparams)",
        )
    be = body.get("beparams") or {}
    if not isinstance(be, dict):
        raise RapiError(400, "beparams must be an object")
    bad = sorted(set(be) - _BEPARAMS)
    if bad:
        raise RapiError(501, f"modify: beparams {', '.join(bad)} cannot be changed here")
    if "auto_balance" in be:
        raise RapiError(501, "modify: beparams auto_balance is set in the desired-state file")
    vcpus = _whole("vcpus", be["vcpus"]) if "vcpus" in be else None
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise RapiError(400, f"force must be true or false, got {force!r}")
    return _memory(be), vcpus, force


def parse_rename(body: dict[str, Any]) -> str:
    """The new name of a rename body; RapiError naming the field."""
    unknown = sorted(set(body) - {"new_name", "ip_check", "name_check"} - _IGNORED)
    if unknown:
        raise RapiError(400, f"rename: unknown parameters {', '.join(unknown)}")
    for check in ("ip_check", "name_check"):
        if body.get(check):
            raise RapiError(
                501, f"rename: {check} (a DNS check) is not done by corral; send it false"
            )
    new_name = body.get("new_name")
    if not isinstance(new_name, str) or not new_name:
        raise RapiError(400, "rename: new_name (a string) is required")
    return new_name


class InstanceChangeRoutes:
    def __init__(self, r: Rapi) -> None:
        self.r = r

    async def modify(self, request: web.Request) -> web.Response:
        spec = self.r.instance(request, request.match_info["name"])
        who = self.r.require(request, Action.ADMIN, instance_tags=spec.tags)
        self.r.no_dry_run(request)
        body = await self.r.body_dict(request)
        memory, vcpus, force = parse_modify(body)
        try:
            accepted = await modify_instance(
                self.r.store,
                self.r.state(),
                instance=spec.name,
                memory_mib=memory,
                vcpus=vcpus,
                hv=parse_hvparams(body),
                force=force,
                actor=who.name,
                reason=self.r.reason(request, ""),
            )
        except OperationRefused as exc:
            raise refused_error(exc) from None
        return await self.r.submitted(
            accepted, kind=JobKind.INSTANCE_MODIFY, target=spec.name, who=who
        )

    async def rename(self, request: web.Request) -> web.Response:
        spec = self.r.instance(request, request.match_info["name"])
        who = self.r.require(request, Action.ADMIN, instance_tags=spec.tags)
        self.r.no_dry_run(request)
        new_name = parse_rename(await self.r.body_dict(request))
        try:
            accepted = await rename_instance(
                self.r.store,
                self.r.state(),
                instance=spec.name,
                new_name=new_name,
                actor=who.name,
                reason=self.r.reason(request, ""),
            )
        except OperationRefused as exc:
            raise refused_error(exc) from None
        return await self.r.submitted(
            accepted, kind=JobKind.INSTANCE_RENAME, target=spec.name, who=who
        )

    def routes(self) -> list[web.RouteDef]:
        base = "/2/instances/{name}"
        return [web.put(base + "/modify", self.modify), web.put(base + "/rename", self.rename)]


def instance_change_routes(r: Rapi) -> list[web.RouteDef]:
    return InstanceChangeRoutes(r).routes()
