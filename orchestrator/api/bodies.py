"""The native API's request bodies as typed models: what each write route accepts,
held to the field rules every entry point shares (`events.fields`), and documented in
the OpenAPI document from the same models. Unknown fields are refused, and so is a
value of the wrong type (never coerced).

Pure: no I/O, no logging. Must not decide what a principal may do.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from events.fields.names import InstanceNameField, NodeNameField
from events.fields.network import IpAddress, Link, MacAddress, NicMode, PrefixLen
from events.fields.rules import FieldError, before
from events.fields.sizes import CpuCount, SizeMiB

MAX_FILES = 100


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise FieldError("must be a string")
    if len(value) > 2000:
        raise FieldError("is longer than 2000")
    if "\x00" in value:
        raise FieldError("must not contain NUL")
    return value


def _file_name(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 255 or "\x00" in value:
        raise FieldError("name must be a file name (1-255 characters)")
    return value


Text = Annotated[str, before(_text), Field(max_length=2000)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ReasonRequest(Body):
    reason: Text = ""


class ReplaceDisksRequest(ReasonRequest):
    mode: Literal["change-secondary", "secondary-rebuild"] = "change-secondary"
    new_secondary: NodeNameField | None = None


class GrowDiskRequest(ReasonRequest):
    disk: Annotated[int, Field(ge=0, le=15)] = 0
    amount_mib: SizeMiB


class InstanceActionRequest(ReasonRequest):
    """What `/instances/{name}/{action}` may hold, over all actions: `mode` and
    `new_secondary` for replace-disks, `disk` and `amount_mib` for grow-disk."""

    mode: Literal["change-secondary", "secondary-rebuild"] = "change-secondary"
    new_secondary: NodeNameField | None = None
    disk: Annotated[int, Field(ge=0, le=15)] = 0
    amount_mib: SizeMiB | None = None


class ModifyRequest(ReasonRequest):
    """`/instances/{name}/modify`: the new memory and/or vCPUs; `force` records a
    change that does not fit its nodes or breaks N+1 (the refusal is recorded)."""

    memory_mib: SizeMiB | None = None
    vcpus: CpuCount | None = None
    force: bool = False


class RenameRequest(ReasonRequest):
    """`/instances/{name}/rename`: the new name (the instance must be stopped)."""

    new_name: InstanceNameField


class NicBody(Body):
    """One NIC of `/instances/{name}/nics`, the fields of a desired-state file's NIC;
    without `mac` it keeps the MAC of the NIC at its position, or gets a new one."""

    mac: MacAddress | None = None
    link: Link = "br0"
    mode: NicMode = "bridged"
    ip: IpAddress | None = None
    prefix_len: PrefixLen | None = None
    gateway: IpAddress | None = None
    nameservers: Annotated[list[IpAddress], Field(max_length=8)] = []


class NicsRequest(ReasonRequest):
    """`/instances/{name}/nics`: the instance's whole new NIC list (NICs left out
    are removed; one appended to the unchanged list is hotplugged when running)."""

    nics: Annotated[list[NicBody], Field(max_length=8)]


class RemoveDiskRequest(ReasonRequest):
    """`/instances/{name}/remove-disk`: the disk to remove (default the last; only
    the last of a stopped instance, never its only one, is removed)."""

    disk: Annotated[int, Field(ge=0, le=15)] | None = None


class DesiredFileText(Body):
    name: Annotated[str, before(_file_name), Field(min_length=1, max_length=255)]
    text: str


class DesiredRequest(Body):
    files: Annotated[list[DesiredFileText], Field(min_length=1, max_length=MAX_FILES)]
    allow_destroy: bool = False
    force: bool = False  # record in-place changes that do not fit (recorded as forced)
    message: Text = ""


INSTANCE_BODIES: dict[str, type[ReasonRequest]] = {
    "replace-disks": ReplaceDisksRequest,
    "grow-disk": GrowDiskRequest,
}
