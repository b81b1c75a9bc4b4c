"""Names and tags: node, instance, group, cluster and the other object names that
reach shells, paths and DRBD resource files (full-string matches, at most 63
characters), and tags (`owner:alice`).

Pure: no I/O, no logging.
"""

from __future__ import annotations

from typing import Annotated

from events.fields.rules import FieldError, after, before, kind, schema
from events.ids import (
    ClusterName,
    GroupName,
    InstanceName,
    InvalidName,
    NodeName,
    check_name,
    check_tag,
)

NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+=@/-]{0,127}$"
MAX_TAGS = 64


def named(what: str) -> object:
    """The validator of a `what` name (used in messages: "node name 'X' must ...")."""

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise FieldError(f"{what} must be a string, got {kind(value)}")
        try:
            return check_name(value, what=what)
        except InvalidName as exc:
            raise FieldError(str(exc)) from None

    return before(check)


def _tag(value: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"a tag must be a string, got {kind(value)}")
    try:
        return check_tag(value)
    except InvalidName as exc:
        raise FieldError(str(exc)) from None


def _few(value: frozenset[str]) -> frozenset[str]:
    if len(value) > MAX_TAGS:
        raise FieldError(f"at most {MAX_TAGS} tags, got {len(value)}")
    return value


_NAME_SCHEMA = schema(type="string", pattern=NAME_PATTERN, maxLength=63)

NodeNameField = Annotated[NodeName, named("node name"), _NAME_SCHEMA]
InstanceNameField = Annotated[InstanceName, named("instance name"), _NAME_SCHEMA]
GroupNameField = Annotated[GroupName, named("group name"), _NAME_SCHEMA]
ClusterNameField = Annotated[ClusterName, named("cluster name"), _NAME_SCHEMA]
OS_NAME_PATTERN = (
    r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?(?:\+[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?)?$"
)


def _os_name(value: object) -> str:
    """An image name, or a Ganeti OS definition's `NAME+VARIANT` (or `NAME`): each
    part a name as check_name takes it."""
    if not isinstance(value, str):
        raise FieldError(f"os must be a string, got {kind(value)}")
    provider, plus, variant = value.partition("+")
    try:
        check_name(provider, what="os")
        if plus:
            check_name(variant, what="os variant")
    except InvalidName as exc:
        raise FieldError(str(exc)) from None
    return value


OsName = Annotated[
    str, before(_os_name), schema(type="string", pattern=OS_NAME_PATTERN, maxLength=127)
]
VolumeGroupName = Annotated[str, named("volume group"), _NAME_SCHEMA]
SshUser = Annotated[str, named("ssh user"), _NAME_SCHEMA]
Tag = Annotated[str, before(_tag), schema(type="string", pattern=TAG_PATTERN, maxLength=128)]
Tags = Annotated[frozenset[Tag], after(_few)]
