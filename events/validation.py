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
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    NewType,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from events.fields.fence import SECRET_LIKE_RE
from events.fields.network import nic_address_problems
from events.fields.rules import FieldError, Rule, field_errors, kind
from events.fields.sizes import fmt_mib
from events.ids import (
    GroupName,
    InstanceName,
    InvalidName,
    NodeName,
    group_name,
    instance_name,
    node_name,
)
from events.specs import (
    CloudInitSpec,
    ClusterPolicy,
    DesiredCluster,
    DiskSpec,
    FenceSpec,
    GroupSpec,
    HvParams,
    ImageSpec,
    InstanceSpec,
    NicSpec,
    NodeSpec,
)

if TYPE_CHECKING:
    from pydantic import TypeAdapter

T = TypeVar("T")
Loc = tuple[int | str, ...]

MODELS: frozenset[type] = frozenset(
    {
        FenceSpec,
        NodeSpec,
        DiskSpec,
        NicSpec,
        HvParams,
        ImageSpec,
        CloudInitSpec,
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


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    got = _ADAPTERS.get(tp)
    if got is None:
        from pydantic import TypeAdapter  # only when something is validated

        got = _ADAPTERS[tp] = TypeAdapter(tp)
    return got


def validate(tp: type[T], data: object) -> T:
    """`data` as a `tp` (one of MODELS), or SpecError with every problem."""
    adapter = _adapter(tp)
    from pydantic import ValidationError

    try:
        value: T = adapter.validate_python(data)
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
    return check_value(_field_types(tp)[name], value, at=(name,))


def check_value(tp: Any, value: object, *, at: Loc = ()) -> Any:
    """`value` held to the rules of type `tp` (an `Annotated` field type): the value,
    or SpecError whose problems' paths start at `at`."""
    adapter = _adapter(tp)
    from pydantic import ValidationError

    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise SpecError(
            tuple(_problem((*at, *loc), message) for loc, _, message in field_errors(exc))
        ) from None


def rule_problems(tp: Any, value: object) -> tuple[Problem, ...]:
    """`value`, already of type `tp`, held to the rules `tp` carries (an `Annotated`
    field type, a spec, a name), without pydantic."""
    return tuple(_recheck(tp, value, ()))


def own_problems(value: object) -> tuple[Problem, ...]:
    """The rule spanning the fields of `value` itself (not of the specs inside it)."""
    rule = _RULES.get(type(value))
    return () if rule is None else tuple(rule(value, ()))


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
    if spec.image is not None and spec.image.name != spec.os:
        yield _problem(
            (*at, "image", "name"),
            f"the image is {spec.image.name!r} but os is {spec.os!r}; they must be the same",
        )


def _image(image: ImageSpec, at: Loc) -> Iterator[Problem]:
    if image.ganeti_os:
        for key in ("source", "sha256"):
            if getattr(image, key):
                yield _problem((*at, key), f"a Ganeti OS definition (kind ganeti-os) has no {key}")
        return
    if "+" in image.name:
        yield _problem(
            (*at, "name"),
            f"image name {image.name!r} must not hold '+' (NAME+VARIANT names a Ganeti OS "
            "definition: kind ganeti-os)",
        )
    if image.parameters:
        yield _problem((*at, "parameters"), "only a Ganeti OS definition takes parameters")
    for key in ("source", "sha256"):
        if not getattr(image, key):
            yield _problem((*at, key), f"an image needs its {key}")


def _nic(nic: NicSpec, at: Loc) -> Iterator[Problem]:
    for name, message in nic_address_problems(
        ip=nic.ip, prefix_len=nic.prefix_len, gateway=nic.gateway, nameservers=nic.nameservers
    ):
        yield _problem((*at, name), message)


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
    ImageSpec: _image,
    NicSpec: _nic,
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
    """An already built spec (or anything holding specs: an event, the desired half
    of a state) checked again by the same rules as `validate`, without pydantic:
    each `Annotated` field's rules run on the typed value, names (`events.ids`) are
    checked wherever a field holds one, then the rules that span fields. For values
    a face builds itself, and for what the codec and checkpoints decode (fast: no
    validator to build on a short-lived CLI)."""
    return tuple(_recheck(type(value), value, ()))


_NAME_CHECKS: dict[Any, Callable[[object], object]] = {
    NodeName: node_name,
    InstanceName: instance_name,
    GroupName: group_name,
}
_LEAVES: dict[Any, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
    type(None): (type(None),),
}


Checker = Callable[[Any, Loc], list[Problem]]
_NOTHING: list[Problem] = []


def _recheck(tp: Any, value: Any, at: Loc) -> list[Problem]:
    return _checker(tp)(value, at)


def decoded_problems(value: object) -> tuple[Problem, ...]:
    """`problems_of` for a value msgspec decoded against its own type (a
    checkpoint's state): msgspec checked every field's type on the way in, so only
    what it does not check runs (each field's rules, names, the rules that span
    fields), and the parts of the value that carry none are not walked at all.
    The same problems as `problems_of`, in the same order, for such a value
    only: anything built or decoded otherwise goes through `problems_of`."""
    tp: Any = type(value)
    check = _rules_checker(tp)
    return () if check is None else tuple(check(value, ()))


@cache
def _checker(tp: Any) -> Checker:
    """A checker for values of type `tp`, built once per type (a short-lived CLI
    re-checks a checkpoint of 2,000 instances with it in tens of milliseconds)."""
    check = _build(tp, typed=True)
    assert check is not None
    return check


@cache
def _rules_checker(tp: Any) -> Checker | None:
    """`_checker(tp)` without the type checks msgspec already made: None when a
    value of `tp` has nothing left to check."""
    return _build(tp, typed=False)


def _part(tp: Any, *, typed: bool) -> Checker | None:
    return _checker(tp) if typed else _rules_checker(tp)


def _build(tp: Any, *, typed: bool) -> Checker | None:
    """The checker of `tp`: with `typed`, every value's type is checked too (never
    None); without, only what msgspec does not check, and None when nothing is left."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        rules = [m.check for m in meta if isinstance(m, Rule)]
        return _then(_part(base, typed=typed), rules, FieldError)
    if origin in (Union, types.UnionType):
        return _union_checker(tp) if typed else _union_rules(tp)
    if origin is dict:
        return _dict_checker(tp, typed=typed)
    if origin in (tuple, frozenset, set):
        return _items_checker(tp, origin, typed=typed)
    if isinstance(tp, NewType):
        name = _NAME_CHECKS.get(tp)
        return _then(_part(tp.__supertype__, typed=typed), [name] if name else [], InvalidName)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _fields_checker(tp, typed=typed)
    return _leaf_checker(tp) if typed else None  # a leaf or an enum: its type is all


def _then(
    inner: Checker | None, tests: list[Callable[[Any], object]], error: type[Exception]
) -> Checker | None:
    """`inner`, then (when it found nothing) each of `tests`, whose `error` is the
    problem."""
    if not tests:
        return inner

    def check(value: Any, at: Loc) -> list[Problem]:
        found = inner(value, at) if inner is not None else _NOTHING
        if found:
            return found
        for test in tests:
            try:
                test(value)
            except error as exc:
                return [_problem(at, str(exc))]
        return _NOTHING

    return check


def _union_checker(tp: Any) -> Checker:
    optional = type(None) in get_args(tp)
    others = [_checker(a) for a in get_args(tp) if a is not type(None)]

    def check(value: Any, at: Loc) -> list[Problem]:
        if value is None and optional:
            return _NOTHING
        first: list[Problem] = []
        for other in others:
            found = other(value, at)
            if not found:
                return _NOTHING
            first = first or found
        return first or [_problem(at, f"unexpected {kind(value)}")]

    return check


def _union_rules(tp: Any) -> Checker | None:
    members = [a for a in get_args(tp) if a is not type(None)]
    inner = [_rules_checker(a) for a in members]
    if all(check is None for check in inner):
        return None
    if len(members) > 1:
        return _checker(tp)  # which member a value is decides its checks: tried in turn
    (only,) = inner
    assert only is not None

    def check(value: Any, at: Loc) -> list[Problem]:
        return _NOTHING if value is None else only(value, at)

    return check


def _dict_checker(tp: Any, *, typed: bool) -> Checker | None:
    key_type, value_type = get_args(tp)
    keys, values = _part(key_type, typed=typed), _part(value_type, typed=typed)
    if keys is None and values is None:
        return None

    def check(value: Any, at: Loc) -> list[Problem]:
        if typed and not isinstance(value, dict):
            return [_problem(at, f"expected an object, got {kind(value)}")]
        out: list[Problem] = []
        for k, v in value.items():
            loc = (*at, str(k))
            if keys is not None:
                out += keys(k, loc)
            if values is not None:
                out += values(v, loc)
        return out

    return check


def _items_checker(tp: Any, origin: Any, *, typed: bool) -> Checker | None:
    args = get_args(tp)
    fixed = origin is tuple and args[-1] is not Ellipsis
    items = [_part(a, typed=typed) for a in (args if fixed else args[:1])]
    if all(check is None for check in items):
        return None

    def check(value: Any, at: Loc) -> list[Problem]:
        if typed and not isinstance(value, tuple | frozenset | set | list):
            return [_problem(at, f"must be a list, got {kind(value)}")]
        out: list[Problem] = []
        ordered = value if origin is tuple else sorted(value, key=str)
        for i, item in enumerate(ordered):
            one = items[i] if fixed else items[0]
            if one is not None:
                out += one(item, (*at, i))
        return out

    return check


def _fields_checker(tp: type, *, typed: bool) -> Checker | None:
    hints = _field_types(tp)
    found = [(f.name, _part(hints[f.name], typed=typed)) for f in dataclasses.fields(tp)]  # type: ignore[arg-type]
    fields = [(name, check) for name, check in found if check is not None]
    spanning = _RULES.get(tp)
    if not typed and not fields and spanning is None:
        return None
    clean = None if typed else _clean_default(tp, hints)

    def check(value: Any, at: Loc) -> list[Problem]:
        if typed and not isinstance(value, tp):
            return [_problem(at, f"expected {tp.__name__}, got {kind(value)}")]
        if clean is not None and value == clean:
            return _NOTHING
        out: list[Problem] = []
        for name, field_check in fields:
            out += field_check(getattr(value, name), (*at, name))
        if not out and spanning is not None:
            out += spanning(value, at)
        return out

    return check


def _leaf_checker(tp: Any) -> Checker:
    if isinstance(tp, type) and issubclass(tp, Enum):
        members = ", ".join(str(m.value) for m in tp)

        def check_enum(value: Any, at: Loc) -> list[Problem]:
            return _NOTHING if isinstance(value, tp) else [_problem(at, f"expected {members}")]

        return check_enum
    accepted = _LEAVES.get(tp)
    if accepted is None:
        return lambda value, at: _NOTHING
    what = kind(tp())

    def check(value: Any, at: Loc) -> list[Problem]:
        if isinstance(value, accepted) and (tp is bool or not isinstance(value, bool)):
            return _NOTHING
        return [_problem(at, f"expected {what}, got {kind(value)}")]

    return check


def _clean_default(tp: type, hints: dict[str, Any]) -> object | None:
    """The value of `tp` made of its defaults, when every field is a string and that
    value breaks no rule; else None. A value equal to it has the same strings, so
    the same (no) problems: checked by comparing, not field by field (every
    instance's hypervisor parameters are mostly left unset)."""
    for f in dataclasses.fields(tp):  # type: ignore[arg-type]
        hint = hints[f.name]
        base = get_args(hint)[0] if get_origin(hint) is Annotated else hint
        if base is not str:
            return None
    try:
        default = tp()
    except TypeError:
        return None
    return None if _recheck(tp, default, ()) else default
