"""Fence-agent fields: the agent's name, option names and one-line option values, and
where a secret comes from (an environment variable or an absolute path, never the
secret itself). Option names that look like secrets are refused as plain options.

Pure: no I/O, no logging. No message repeats an option value or a secret reference.
"""

from __future__ import annotations

import re
from typing import Annotated

from events.fields.rules import FieldError, before, kind, schema, show

_AGENT_RE = re.compile(r"fence_[a-z0-9_]+")
_OPTION_RE = re.compile(r"[a-z][a-z0-9_-]*")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SECRET_LIKE_RE = re.compile(r"pass|secret|token|credential|(^|[_-])(key|psk)([_-]|$)")


def _agent(value: object) -> str:
    if not isinstance(value, str) or not _AGENT_RE.fullmatch(value) or len(value) > 64:
        raise FieldError(
            f"{show(value)} is not a fence agent name; expected fence_ followed by "
            "lowercase letters, digits or '_' (e.g. fence_ipmilan)"
        )
    return value


def option_name(value: object) -> str:
    if not isinstance(value, str) or not _OPTION_RE.fullmatch(value) or len(value) > 64:
        raise FieldError(
            f"option name {show(value)} must be lowercase letters, digits, '_' or '-', "
            "starting with a letter"
        )
    return value


def option_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        text = str(value)
        if any(c in text for c in "\n\r\0") or len(text) > 1024:
            raise FieldError("an option value must be one line of at most 1024 characters")
        return text
    raise FieldError(f"an option value must be a string, number or boolean, got {kind(value)}")


def _env(value: object) -> str:
    if not isinstance(value, str) or not _ENV_RE.fullmatch(value) or len(value) > 128:
        # Not echoed: a secret pasted here by mistake must not reach a log.
        raise FieldError("env must name an environment variable (letters, digits and '_')")
    return value


def _path(value: object) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or any(c in value for c in "\n\r\0")
        or ".." in value.split("/")
        or len(value) > 4096
    ):
        raise FieldError("file must be an absolute path without '..' (not echoed here)")
    return value


FenceAgent = Annotated[str, before(_agent), schema(type="string", pattern="^fence_[a-z0-9_]+$")]
OptionName = Annotated[
    str, before(option_name), schema(type="string", pattern="^[a-z][a-z0-9_-]*$")
]
OptionValue = Annotated[str, before(option_value), schema(type="string", maxLength=1024)]
EnvName = Annotated[str, before(_env), schema(type="string", pattern="^[A-Za-z_][A-Za-z0-9_]*$")]
AbsolutePath = Annotated[str, before(_path), schema(type="string", pattern="^/")]
