"""Typed identifiers and the one validator for every name that may reach a shell,
a file path or a DRBD resource name.

Pure: no I/O, no logging.
"""

from __future__ import annotations

import re
import uuid
from typing import NewType

NodeName = NewType("NodeName", str)
InstanceName = NewType("InstanceName", str)
GroupName = NewType("GroupName", str)
EventId = NewType("EventId", str)
JobId = NewType("JobId", str)
ClusterName = NewType("ClusterName", str)


def new_event_id() -> EventId:
    """A fresh event id (32 hex digits), unique without coordination."""
    return EventId(uuid.uuid4().hex)


# DNS-label-like names, dots allowed for FQDNs. No shell metacharacters, no
# whitespace, no slashes, no leading dash (would read as an option), at most 63
# characters (DRBD resource names and LV names derive from them). Always matched
# with fullmatch: `$` alone lets a trailing newline through.
_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?")
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=@/-]{0,127}")


class InvalidName(ValueError):
    """A name that is unsafe for a shell, a path or a DRBD resource."""


def check_name(value: object, *, what: str) -> str:
    """Return `value` if it is a safe object name, else raise InvalidName saying why."""
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidName(f"{what} must not be empty")
    if len(value) > 63:
        raise InvalidName(f"{what} {value!r} is longer than 63 characters")
    if not _NAME_RE.fullmatch(value):
        raise InvalidName(
            f"{what} {value!r} must be lowercase letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    if ".." in value:
        raise InvalidName(f"{what} {value!r} must not contain '..'")
    return value


def check_tag(value: object) -> str:
    """Return `value` if it is a safe tag (e.g. `owner:alice`, `service:web`)."""
    if not isinstance(value, str) or not _TAG_RE.fullmatch(value):
        raise InvalidName(
            f"tag {value!r} must be 1-128 characters of letters, digits and ._:+=@/- "
            "starting with a letter or digit"
        )
    return value


def node_name(value: object) -> NodeName:
    return NodeName(check_name(value, what="node name"))


def instance_name(value: object) -> InstanceName:
    return InstanceName(check_name(value, what="instance name"))


def group_name(value: object) -> GroupName:
    return GroupName(check_name(value, what="group name"))


def cluster_name(value: object) -> ClusterName:
    return ClusterName(check_name(value, what="cluster name"))
