"""How a field rule is written: a check that returns the value or raises
`FieldError` with a message for people, carried as `Annotated` metadata that becomes a
pydantic validator (and the JSON schema it documents) when a type is first validated.
`field_errors` turns pydantic's errors into (path, message) pairs that name the field
the way users wrote it.

Pure: no I/O, no logging. Messages never repeat a value marked secret. Must not import
pydantic when imported itself: every `corral` command loads the specs, few validate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
    from pydantic_core import CoreSchema

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
    from pydantic_core import PydanticCustomError

    def run(value: Any) -> T:
        try:
            return check(value)
        except FieldError as exc:
            raise PydanticCustomError("corral", "{message}", {"message": str(exc)}) from None

    return run


@dataclass(frozen=True, slots=True)
class Rule:
    """`check` run before pydantic types the value (it checks the type itself) or
    after; pydantic builds the validator from it the first time a type is validated."""

    check: Callable[[Any], Any]
    when: Literal["before", "after"]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        inner = handler(source)
        run = _raising(self.check)
        if self.when == "before":
            return core_schema.no_info_before_validator_function(run, inner)
        return core_schema.no_info_after_validator_function(run, inner)


@dataclass(frozen=True, slots=True)
class JsonSchema:
    """The JSON schema a rule documents (for the OpenAPI document), in place of what
    pydantic would derive from the plain type."""

    text: str  # JSON, so that the Annotated type holding it stays hashable

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        got: dict[str, Any] = json.loads(self.text)
        return got


def after(check: Callable[[Any], T]) -> Rule:
    """Run `check` on the value pydantic has already typed."""
    return Rule(check, "after")


def before(check: Callable[[Any], T]) -> Rule:
    """Run `check` on the raw input (it checks the type itself)."""
    return Rule(check, "before")


def schema(**json_schema: Any) -> JsonSchema:
    return JsonSchema(json.dumps(json_schema, sort_keys=True))


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"expected true or false, got {kind(value)}")
    return value


def count(lo: int, hi: int, what: str = "entries") -> Rule:
    """A list holding `lo` to `hi` entries."""

    def check(value: object) -> object:
        if isinstance(value, list | tuple) and len(value) < lo:
            raise FieldError("must not be empty" if lo == 1 else f"needs at least {lo} {what}")
        if isinstance(value, list | tuple) and len(value) > hi:
            raise FieldError(f"at most {hi} {what}, got {len(value)}")
        return value

    return before(check)


# true or false, never 1, "yes" or "true".
Flag = Annotated[bool, before(_flag), schema(type="boolean")]


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
