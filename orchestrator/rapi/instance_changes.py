"""Ganeti RAPI v2 `PUT /2/instances/NAME/modify`, as Ganeti's client sends it
(`ModifyInstance(name, beparams={...}, force=...)`): memory (`maxmem`, or the older
`memory`; `minmem` only equal to it, corral gives an instance one memory size),
`vcpus` and `hvparams` (Ganeti's kvm names; "default" unsets one), recorded
through `orchestrator.instance_changes` as an `instance.modify` job (Ganeti's
OP_INSTANCE_SET_PARAMS) and refused with Ganeti's 400 when the change
does not fit its nodes, unless `force`. `nics`/`disks` (read by
`orchestrator.rapi.device_bodies`): additions (Ganeti's `[["add", {...}]]`) are
recorded with an `instance.hotplug` job (`orchestrator.instance_changes.add_devices`);
NICs removed or changed as an `instance.updated` event with an `instance.modify`
job (at the next start), the last disk removed as an `instance.remove-disk` job
(`orchestrator.device_changes`). Parameters corral does not change here
(`os_name`, ...) are refused with 501 naming them, before anything is recorded.

`PUT /2/instances/NAME/rename` (`RenameInstance(name, new_name, ip_check=,
name_check=)`) records an `instance.rename` job (OP_INSTANCE_RENAME); corral checks
no DNS, so `ip_check`/`name_check` true are refused with 501 rather than ignored.

Must not run node commands or wait for the job.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from events.model import JobKind
from events.specs import InstanceSpec
from events.validation import SpecError, check_field
from orchestrator.desired.macs import used_macs, with_macs
from orchestrator.device_changes import (
    change_nics,
    nics_edited,
    others_macs,
    remove_disk,
    with_checked_macs,
)
from orchestrator.instance_changes import add_devices, modify_instance, rename_instance
from orchestrator.operations import OperationRefused
from orchestrator.rapi.context import Rapi, RapiError, refused_error
from orchestrator.rapi.device_bodies import DeviceOps, parse_devices
from orchestrator.rapi.instance_create import ganeti_nic, ganeti_size
from orchestrator.roles import Action, Principal

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
    unknown = sorted(set(body) - {"beparams", "hvparams", "force", "hotplug"} - _IGNORED)
    if unknown:
        raise RapiError(
            501,
            f"modify: {', '.join(unknown)} cannot be changed through this RAPI "
            "(memory and vcpus can, in beparams, hvparams, and nics and disks)",
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


def _additions(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The parameters of each `add` in Ganeti's `nics`/`disks` list: `[op, params]`
    or `[op, index, params]`, op "add" at the end (index -1); a body with removals
    or changes does not come here (`parse_devices` sent it elsewhere)."""
    entries = body.get(key) or []
    if not isinstance(entries, list):
        raise RapiError(400, f"{key} must be a list of [operation, parameters]")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, list) or len(entry) not in (2, 3):
            raise RapiError(400, f"{key}[{i}] must be [operation, parameters]")
        op, params = entry[0], entry[-1]
        if op != "add":
            raise RapiError(
                501, f"{key}[{i}]: {op!r} is not done through this RAPI (only add, at the end)"
            )
        if len(entry) == 3 and entry[1] not in (-1, "-1"):
            raise RapiError(501, f"{key}[{i}]: corral adds {key} at the end only (index -1)")
        if not isinstance(params, dict):
            raise RapiError(400, f"{key}[{i}]: parameters must be an object")
        out.append(params)
    return out


def added_spec(
    spec: InstanceSpec, body: dict[str, Any], *, taken: set[str], prefix: str
) -> InstanceSpec:
    """`spec` with the NICs and disks a modify body adds (MACs filled, unique)."""
    extra = sorted(set(body) - {"nics", "disks", "hotplug"} - _IGNORED)
    if extra:
        raise RapiError(501, f"modify: send nics/disks additions without {', '.join(extra)}")
    nics = [ganeti_nic(n) for n in _additions(body, "nics")]
    disks = [{"size_mib": ganeti_size(d.get("size"))} for d in _additions(body, "disks")]
    plain = {
        "nics": [
            *(
                {
                    "mac": n.mac,
                    "link": n.link,
                    "mode": n.mode,
                    "ip": n.ip,
                    "prefix_len": n.prefix_len,
                    "gateway": n.gateway,
                    "nameservers": list(n.nameservers),
                }
                for n in spec.nics
            ),
            *nics,
        ],
        "disks": [*({"size_mib": d.size_mib} for d in spec.disks), *disks],
    }
    try:
        got_nics = check_field(InstanceSpec, "nics", plain["nics"])
        got_disks = check_field(InstanceSpec, "disks", plain["disks"])
    except SpecError as exc:
        raise RapiError(400, f"modify: {exc}") from None
    for i, nic in enumerate(got_nics[len(spec.nics) :], len(spec.nics)):
        if nic.mac and nic.mac in taken:
            raise RapiError(400, f"nics[{i}].mac {nic.mac} is already used in the cluster")
    return with_macs(replace(spec, nics=got_nics, disks=got_disks), taken=taken, prefix=prefix)


class InstanceChangeRoutes:
    def __init__(self, r: Rapi) -> None:
        self.r = r

    async def modify(self, request: web.Request) -> web.Response:
        spec = self.r.instance(request, request.match_info["name"])
        who = self.r.require(request, Action.ADMIN, instance_tags=spec.tags)
        self.r.no_dry_run(request)
        body = await self.r.body_dict(request)
        if body.get("nics") or body.get("disks"):
            ops = parse_devices(body)
            if ops.removals:
                return await self._change_devices(request, spec, body, ops, who)
            return await self._add_devices(request, spec, body, who)
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

    async def _add_devices(
        self, request: web.Request, spec: InstanceSpec, body: dict[str, Any], who: Principal
    ) -> web.Response:
        state = self.r.state()
        new = added_spec(
            spec,
            body,
            taken=used_macs(state.desired.instances),
            prefix=state.desired.policy.mac_prefix,
        )
        try:
            accepted = await add_devices(
                self.r.store, state, new=new, actor=who.name, reason=self.r.reason(request, "")
            )
        except OperationRefused as exc:
            raise refused_error(exc) from None
        return await self.r.submitted(
            accepted, kind=JobKind.INSTANCE_HOTPLUG, target=spec.name, who=who
        )

    async def _change_devices(
        self,
        request: web.Request,
        spec: InstanceSpec,
        body: dict[str, Any],
        ops: DeviceOps,
        who: Principal,
    ) -> web.Response:
        """NICs removed or changed (an `instance.modify` job with the new spec), or
        the last disk removed (an `instance.remove-disk` job)."""
        extra = sorted(set(body) - {"nics", "disks", "hotplug"} - _IGNORED)
        if extra:
            raise RapiError(
                501, f"modify: send nics/disks removals and changes without {', '.join(extra)}"
            )
        state = self.r.state()
        reason = self.r.reason(request, "")
        try:
            if ops.disk_removes:
                index = ops.disk_removes[0]
                accepted = await remove_disk(
                    self.r.store,
                    state,
                    instance=spec.name,
                    index=None if index == -1 else index,
                    actor=who.name,
                    reason=reason,
                )
                kind = JobKind.INSTANCE_REMOVE_DISK
            else:
                new = with_checked_macs(
                    nics_edited(spec, ops.nic_edits),
                    taken=others_macs(state, spec.name),
                    prefix=state.desired.policy.mac_prefix,
                )
                accepted = await change_nics(
                    self.r.store, state, new=new, actor=who.name, reason=reason
                )
                kind = JobKind.INSTANCE_MODIFY
        except OperationRefused as exc:
            raise refused_error(exc) from None
        return await self.r.submitted(accepted, kind=kind, target=spec.name, who=who)

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
