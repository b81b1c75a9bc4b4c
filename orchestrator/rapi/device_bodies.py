"""The `nics` and `disks` lists of a RAPI `PUT /2/instances/NAME/modify` body, as
Ganeti's OP_INSTANCE_SET_PARAMS takes them: entries `[op, params]` (op "add" or
"remove", acting at the end, or an index: modify that one) or `[op, index,
params]` (op "add", "remove" or "modify"; index a position, -1 the last), read
into what corral does with them: NICs and disks added at the end, NICs removed or
changed (their fields in Ganeti's names: `mac`, `ip`, `mode`, `link`), the last
disk removed. Everything else is refused with a RapiError naming the entry or
key: 400 for what is malformed or unknown, 501 for what Ganeti does and corral
does not (changing a disk's parameters, a NIC's `name`/`network`/`vlan`).

Pure: no I/O, no logging; checks the body's shape only (indexes against the
instance are checked by `orchestrator.device_changes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.device_changes import NicEdit
from orchestrator.rapi.context import RapiError

# Ganeti's NIC parameters corral keeps (as NicSpec fields of the same names).
NIC_KEYS = frozenset({"mac", "ip", "mode", "link"})
# Ganeti's NIC parameters corral has no counterpart for.
NIC_UNSUPPORTED = frozenset({"name", "network", "vlan"})
_OPS = ("add", "remove", "modify")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceOps:
    """What a modify body's `nics`/`disks` ask for."""

    nic_adds: tuple[dict[str, Any], ...] = ()  # parameters of each NIC added at the end
    nic_edits: tuple[NicEdit, ...] = ()  # removals and changes, in order
    disk_adds: tuple[dict[str, Any], ...] = ()
    disk_removes: tuple[int, ...] = ()  # indexes (-1: the last)

    @property
    def additions(self) -> bool:
        return bool(self.nic_adds or self.disk_adds)

    @property
    def removals(self) -> bool:
        return bool(self.nic_edits or self.disk_removes)


def _index(key: str, i: int, value: Any) -> int:
    if isinstance(value, bool):
        raise RapiError(400, f"{key}[{i}]: the index must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (value.isdigit() or value == "-1"):
        return int(value)
    raise RapiError(
        400,
        f"{key}[{i}]: the index must be a whole number or -1 (corral names devices by "
        f"position, not by name or UUID), got {value!r}",
    )


def _entry(key: str, i: int, entry: Any) -> tuple[str, int, dict[str, Any]]:
    """(op, index, params) of one entry, in Ganeti's newer form."""
    if not isinstance(entry, list) or len(entry) not in (2, 3):
        raise RapiError(
            400, f"{key}[{i}] must be [operation, parameters] or [operation, index, parameters]"
        )
    params = entry[-1]
    if not isinstance(params, dict):
        raise RapiError(400, f"{key}[{i}]: parameters must be an object, got {params!r}")
    op = entry[0]
    if len(entry) == 3:
        if op not in _OPS:
            raise RapiError(400, f"{key}[{i}]: operation {op!r} is not one of {', '.join(_OPS)}")
        return op, _index(key, i, entry[1]), params
    if op in ("add", "remove"):
        return op, -1, params
    if op == "modify":
        raise RapiError(400, f'{key}[{i}]: modify needs an index: ["modify", index, parameters]')
    return "modify", _index(key, i, op), params


def _nic_params(i: int, params: dict[str, Any]) -> dict[str, Any]:
    unsupported = sorted(set(params) & NIC_UNSUPPORTED)
    if unsupported:
        raise RapiError(501, f"nics[{i}].{unsupported[0]}: corral keeps no NIC {unsupported[0]}")
    unknown = sorted(set(params) - NIC_KEYS)
    if unknown:
        raise RapiError(
            400,
            f"nics[{i}].{unknown[0]}: unknown NIC parameter (known: {', '.join(sorted(NIC_KEYS))})",
        )
    out = dict(params)
    if "mac" in out and out["mac"] in ("", "auto", "generate"):
        out["mac"] = None  # a new one is generated
    if "ip" in out and out["ip"] in ("", "none", None):
        out["ip"] = None
    return out


def parse_devices(body: dict[str, Any]) -> DeviceOps:
    """The device operations of a modify body; RapiError naming the entry at fault."""
    nic_adds: list[dict[str, Any]] = []
    nic_edits: list[NicEdit] = []
    disk_adds: list[dict[str, Any]] = []
    disk_removes: list[int] = []
    for key in ("nics", "disks"):
        entries = body.get(key) or []
        if not isinstance(entries, list):
            raise RapiError(400, f"{key} must be a list of [operation, parameters]")
        for i, raw in enumerate(entries):
            op, index, params = _entry(key, i, raw)
            if op == "add":
                if index != -1:
                    raise RapiError(
                        501, f"{key}[{i}]: corral adds {key} at the end only (index -1)"
                    )
                (nic_adds if key == "nics" else disk_adds).append(params)
            elif op == "remove" and params:
                raise RapiError(
                    400, f"{key}[{i}]: a removal takes no parameters, got {sorted(params)}"
                )
            elif key == "nics":
                nic_edits.append(
                    NicEdit(
                        op=op, index=index, params=_nic_params(i, params) if op == "modify" else {}
                    )
                )
            elif op == "remove":
                disk_removes.append(index)
            else:
                raise RapiError(
                    501,
                    f"disks[{i}]: changing a disk's parameters is not done by corral "
                    "(grow it with grow-disk; add or remove the last one)",
                )
    ops = DeviceOps(
        nic_adds=tuple(nic_adds),
        nic_edits=tuple(nic_edits),
        disk_adds=tuple(disk_adds),
        disk_removes=tuple(disk_removes),
    )
    if ops.additions and ops.removals:
        raise RapiError(
            400, "modify: send additions and removals or changes of nics/disks separately"
        )
    if ops.nic_edits and ops.disk_removes:
        raise RapiError(400, "modify: send the disk removal and the NIC changes separately")
    if len(ops.disk_removes) > 1:
        raise RapiError(400, "disks: one disk is removed at a time (the last one)")
    return ops
