"""How a field rule is written: a check that returns the value or raises
`FieldError` with a message for people, wrapped as a pydantic validator with the
JSON schema it documents. `field_errors` turns pydantic's errors into (path, message)
pairs that name the field the way users wrote it.

Pure: no I/O, no logging. Messages never repeat a value marked secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator, Strict, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

T = TypeVar("T")

# Pydantic's own error types (a missing key, a wrong container) in corral's words.
_PLAIN = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
    "dataclass_type": "expected an object",
    "model_type": "expected an object",
    "dict_type": "expected an object",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "frozen_set_type": "must be a list",
    "set_type": "must be a list",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "int_type": "expected a whole number",
    "float_type": "expected a number",
    "enum": "is not one of the allowed values",
    "literal_error": "is not one of the allowed values",
    "too_short": "must not be empty",
    "too_long": "has too many entries",
}


# true or false, never 1, "yes" or "true".
Flag = Annotated[bool, Strict()]


class FieldError(ValueError):
    """A value a field rule refuses; the message says why and what is expected."""


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (type(None), "nothing (null)"),
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (Mapping, "a mapping"),
    ((list, tuple), "a list"),
)


def kind(value: object) -> str:
    """What a value is, for messages (never the value itself)."""
    for tp, word in _KINDS:
        if isinstance(value, tp):
            return word
    return f"a {type(value).__name__}"


def show(value: object) -> str:
    """A short rendering of a scalar for messages."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return kind(value)


def _raising(check: Callable[[Any], T]) -> Callable[[Any], T]:
    def run(value: Any) -> T:
        try:
            return check(value)
        except FieldError as exc:
            raise PydanticCustomError("corral", "{message}", {"message": str(exc)}) from None

    return run


def after(check: Callable[[Any], T]) -> AfterValidator:
    """Run `check` on the value pydantic has already typed."""
    return AfterValidator(_raising(check))


def before(check: Callable[[Any], T]) -> BeforeValidator:
    """Run `check` on the raw input (it checks the type itself)."""
    return BeforeValidator(_raising(check))


def schema(**json_schema: Any) -> WithJsonSchema:
    return WithJsonSchema(json_schema)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "tagged-union")):
            out += f".{part}" if out else str(part)
    return out


def field_errors(exc: ValidationError) -> Iterator[tuple[tuple[int | str, ...], str, str]]:
    """(loc, dotted path, message) for each error, in corral's words."""
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
        if err["type"] == "corral":
            message = str((err.get("ctx") or {}).get("message", err["msg"]))
        else:
            message = _PLAIN.get(err["type"], err["msg"])
            if err["type"] not in ("missing", "extra_forbidden", "too_short", "too_long"):
                message = f"{message}, got {kind(err['input'])}"
        yield loc, _path(loc), message
