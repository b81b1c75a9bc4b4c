"""The one typed model checked: `validate(SpecType, data)` turns plain data (a parsed
JSON body, a decoded event's payload, a desired-state entry) into a spec of
`events.specs` by the field rules of `events.fields`, then the rules that span fields
(a secret comes from exactly one place, host memory is less than the node's, a
pinned secondary is not the primary...). Every problem comes back at once, each with
its field path, in a `SpecError`.

Pure: no I/O, no logging. Must not coerce: a value of the wrong type is refused,
never converted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar, get_type_hints

from pydantic import TypeAdapter, ValidationError

from events.fields.fence import SECRET_LIKE_RE
from events.fields.rules import field_errors
from events.fields.sizes import fmt_mib
from events.specs import (
    ClusterPolicy,
    DesiredCluster,
    DiskSpec,
    FenceSpec,
    GroupSpec,
    InstanceSpec,
    NicSpec,
    NodeSpec,
)

T = TypeVar("T")
Loc = tuple[int | str, ...]

MODELS: frozenset[type] = frozenset(
    {
        FenceSpec,
        NodeSpec,
        DiskSpec,
        NicSpec,
        InstanceSpec,
        GroupSpec,
        ClusterPolicy,
        DesiredCluster,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    loc: Loc  # the field's path in the spec: ("nics", 0, "ip")
    path: str  # the same, written: "nics[0].ip"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ValueError):
    """Data that is not a valid spec; `problems` names every field at fault."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(tp: type[Any]) -> TypeAdapter[Any]:
    got = _ADAPTERS.get(tp)
    if got is None:
        got = _ADAPTERS[tp] = TypeAdapter(tp)
    return got


def validate(tp: type[T], data: object) -> T:
    """`data` as a `tp` (one of MODELS), or SpecError with every problem."""
    try:
        value: T = _adapter(tp).validate_python(data)
    except ValidationError as exc:
        raise SpecError(
            tuple(Problem(loc=loc, path=path, message=msg) for loc, path, msg in field_errors(exc))
        ) from None
    problems = tuple(_cross(value, ()))
    if problems:
        raise SpecError(problems)
    return value


def check_field(tp: type, name: str, value: object) -> Any:
    """One field of spec `tp` checked alone (as `validate` checks it): the value, or
    SpecError whose problems' paths start at the field."""
    annotation = _field_types(tp)[name]
    try:
        return _adapter(annotation).validate_python(value)
    except ValidationError as exc:
        raise SpecError(
            tuple(_problem((name, *loc), message) for loc, _, message in field_errors(exc))
        ) from None


def cross_problems(value: object) -> tuple[Problem, ...]:
    """The rules that span fields, for a spec built field by field."""
    return tuple(_cross(value, ()))


@cache
def _field_types(tp: type) -> dict[str, Any]:
    return get_type_hints(tp, include_extras=True)


def _written(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(loc: Loc, message: str) -> Problem:
    return Problem(loc=loc, path=_written(loc), message=message)


def _fence(fence: FenceSpec, at: Loc) -> Iterator[Problem]:
    for i, (name, _) in enumerate(fence.options):
        if SECRET_LIKE_RE.search(name) and not name.endswith("_script"):
            yield _problem(
                (*at, "options", i),
                f"{name!r} looks like a secret and must not be written in the file; "
                "secrets come from the orchestrator hosts' fencing configuration "
                "(/etc/corral/fencing.yaml)",
            )


def _node(node: NodeSpec, at: Loc) -> Iterator[Problem]:
    if node.host_memory_mib >= node.memory_mib:
        yield _problem(
            (*at, "host_memory_mib"),
            f"host_memory ({fmt_mib(node.host_memory_mib)}) must be less than the node's "
            f"memory ({fmt_mib(node.memory_mib)})",
        )
    if node.host_cpus > node.cpus:
        yield _problem(
            (*at, "host_cpus"),
            f"host_cpus ({node.host_cpus}) must not be more than the node's cpus ({node.cpus})",
        )


def _instance(spec: InstanceSpec, at: Loc) -> Iterator[Problem]:
    if spec.primary is not None and spec.primary == spec.secondary:
        yield _problem(
            (*at, "secondary"),
            f"secondary must be a different node than primary ({spec.primary})",
        )


def _policy(policy: ClusterPolicy, at: Loc) -> Iterator[Problem]:
    if policy.lost_timeout_s <= policy.suspect_timeout_s:
        yield _problem(
            (*at, "lost_timeout_s"),
            f"lost_timeout ({policy.lost_timeout_s:g}s) must be longer than suspect_timeout "
            f"({policy.suspect_timeout_s:g}s)",
        )


_RULES: dict[type, Callable[[Any, Loc], Iterator[Problem]]] = {
    FenceSpec: _fence,
    NodeSpec: _node,
    InstanceSpec: _instance,
    ClusterPolicy: _policy,
}


def _cross(value: object, at: Loc) -> Iterator[Problem]:
    """The rules that span fields, for `value` and every spec inside it."""
    rule = _RULES.get(type(value))
    if rule is not None:
        yield from rule(value, at)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _cross(getattr(value, f.name), (*at, f.name))
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                yield from _cross(item[1], (*at, i))  # (name, value) pairs
            else:
                yield from _cross(item, (*at, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _cross(item, (*at, str(key)))


def problems_of(value: object) -> tuple[Problem, ...]:
    """An already built spec (or anything holding specs) checked again, as `validate`
    would: for values a face builds itself before appending them."""
    tp = type(value)
    if tp not in MODELS:
        return tuple(_cross(value, ()))
    try:
        validate(tp, _adapter(tp).dump_python(value, mode="json", warnings=False))
    except SpecError as exc:
        return exc.problems
    return ()
