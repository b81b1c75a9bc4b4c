"""A Ganeti RAPI version-1 instance creation request (`POST /2/instances`) read into
the one typed model: Ganeti's shape (beparams, disks with sizes in MiB or with M/G/T,
nics, pnode/snode) mapped onto `events.specs.InstanceSpec` and held to the rules a
desired-state file is held to (`events.validation`); problems named in Ganeti's words;
`osparams` (a creation's or a reinstall's) over the parameters of the catalogue's
Ganeti OS definition.

Pure: no I/O, no logging. Must not accept a request corral cannot honour (another
disk template, import, a hypervisor other than kvm): those are refused, not ignored.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from events.fields.sizes import size_text
from events.specs import ImageSpec, InstanceSpec, PowerState
from events.validation import SpecError, check_field, validate
from orchestrator.rapi.context import RapiError

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


def ganeti_size(value: Any) -> Any:
    """Ganeti's sizes: MiB, or a string with a unit ('10G', '512MB'); anything else is
    left for the model to refuse."""
    if isinstance(value, str):
        mib = size_text(value)
        if mib is not None and mib.denominator == 1:
            return int(mib)
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


def ganeti_nic(n: Any) -> Any:
    """A Ganeti NIC object as the model's (mac auto/generate: none yet)."""
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
        "memory_mib": ganeti_size(be.get("maxmem", be.get("memory", 128))),
        "vcpus": be.get("vcpus", 1),
        "disks": (
            [{"size_mib": ganeti_size(d.get("size"))} if isinstance(d, dict) else d for d in disks]
            if isinstance(disks, list)
            else disks
        ),
        "os": body.get("os") or body.get("os_type") or "none",
        "nics": [ganeti_nic(n) for n in nics] if isinstance(nics, list) else nics,
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


def with_osparams(spec: InstanceSpec, osparams: object) -> InstanceSpec:
    """A creation's or reinstall's `osparams` over the parameters of the
    catalogue's entry for its Ganeti OS definition (Ganeti's instance osparams
    over the OS's); 400 for osparams without a definition (an image takes none)
    or that the model refuses."""
    if not osparams:
        return spec
    if not isinstance(osparams, dict):
        raise RapiError(400, "osparams must be an object")
    image = spec.image
    if image is not None and not image.ganeti_os:
        raise RapiError(
            400,
            f"osparams: os {spec.os!r} is an image, and images take no OS parameters "
            "(only a Ganeti OS definition, kind: ganeti-os, does)",
        )
    if image is None:
        raise RapiError(
            400, f"osparams: os {spec.os!r} is not a Ganeti OS definition of the catalogue"
        )
    try:
        params = check_field(ImageSpec, "parameters", {**dict(image.parameters), **osparams})
    except SpecError as exc:
        raise RapiError(400, "osparams: " + "; ".join(p.message for p in exc.problems)) from None
    return replace(spec, image=replace(image, parameters=params))
