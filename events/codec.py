"""Events to bytes and back: JSON with the envelope
`{"type", "v", "id", "time", "actor", "reason", "causation_id", "correlation_id",
"data"}`, nested frozen dataclasses, enums, tuples and frozensets included, and an
upcaster registry that brings old schema versions up to date before decoding.
Decoding checks what it builds by the rules every entry point uses: names
(`events.ids`), specs (`events.validation`) and bounded fields (`Annotated` rules), so
a value written to etcd by anything but corral is refused here (`CorruptEvent`), not
passed on to a node. `undecodable` stands in for such an event, so the fold can raise
an alert and keep the versions of the objects it names.

Pure: no I/O, no logging.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from enum import Enum
from functools import cache
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

from events.fields.rules import kind
from events.ids import (
    EventId,
    GroupName,
    InstanceName,
    NodeName,
    group_name,
    instance_name,
    node_name,
)
from events.model import EVENT_TYPES, Event, EventUndecodable
from events.validation import MODELS, Problem, own_problems, rule_problems

T = TypeVar("T")
_ENVELOPE = ("id", "time", "actor", "reason", "causation_id", "correlation_id")

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# (type, version) -> function turning that version's `data` into version + 1's.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class CorruptEvent(ValueError):
    """Stored bytes that do not decode into an event; says why."""


def register_upcaster(event_type: str, from_version: int, fn: Upcaster) -> None:
    UPCASTERS[(event_type, from_version)] = fn


def to_plain(value: Any) -> Any:
    plain = _PLAIN.get(type(value))
    if plain is None:
        plain = _PLAIN[type(value)] = _plain_for(type(value))
    return plain(value)


# How to make a value of each type plain, worked out once per type (a probe's
# observation holds hundreds of values, and thousands of events go by a minute).
_PLAIN: dict[type, Callable[[Any], Any]] = {}


def _plain_for(cls: type) -> Callable[[Any], Any]:
    if dataclasses.is_dataclass(cls) and not issubclass(cls, type):
        names = tuple(f.name for f in dataclasses.fields(cls) if f.init)
        return lambda value: {name: to_plain(getattr(value, name)) for name in names}
    if issubclass(cls, Enum):
        return lambda value: value.value
    if issubclass(cls, tuple | list):
        return lambda value: [to_plain(v) for v in value]
    if issubclass(cls, frozenset | set):
        return lambda value: sorted(to_plain(v) for v in value)
    if issubclass(cls, dict):
        return lambda value: {str(k): to_plain(v) for k, v in value.items()}
    return _same


def _same(value: Any) -> Any:
    return value


# Names that reach shells, paths and DRBD resource files, wherever an event holds one.
_NAMES: dict[Any, Callable[[object], str]] = {
    NodeName: node_name,
    InstanceName: instance_name,
    GroupName: group_name,
}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _refuse(found: tuple[Problem, ...]) -> None:
    if found:
        raise ValueError("; ".join(str(p) for p in found))


def from_plain(tp: Any, value: Any) -> Any:
    """`value` (plain JSON) as a `tp`, checked as it is built."""
    return _decoder(tp)(value)


def _decoder(tp: Any) -> Decoder:
    try:
        decoder = _DECODERS.get(tp)
    except TypeError:  # an unhashable type form: worked out every time
        return _decoder_for(tp)
    if decoder is None:
        decoder = _DECODERS[tp] = _decoder_for(tp)
    return decoder


Decoder = Callable[[Any], Any]
# The decoder of each type, worked out once: which rules apply, the fields of a
# dataclass and their types, the decoders of a container's items. Every value is
# still checked as before; only the working out of what to check is not repeated.
_DECODERS: dict[Any, Decoder] = {}


def _decoder_for(tp: Any) -> Decoder:
    if tp is Any:
        return _same
    origin = get_origin(tp)
    if origin is Annotated:
        return _annotated(tp)
    container = _CONTAINERS.get(origin)
    if container is not None:
        return container(tp)
    if isinstance(tp, typing.NewType):
        return _new_type(tp)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp)
    return _scalar(tp)


def _annotated(tp: Any) -> Decoder:
    inner = get_args(tp)[0]

    def decode(value: Any) -> Any:
        decoded = from_plain(inner, value)
        _refuse(rule_problems(tp, decoded))
        return decoded

    return decode


def _new_type(tp: Any) -> Decoder:
    supertype = tp.__supertype__
    check = _NAMES.get(tp)

    def decode(value: Any) -> Any:
        plain = from_plain(supertype, value)
        return plain if check is None else check(plain)

    return decode


class _At(ValueError):
    """A decoding error and where it is in the event: `spec.nics[0].ip: ...`."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message

    def under(self, part: str | int) -> _At:
        step = f"[{part}]" if isinstance(part, int) else str(part)
        sep = "" if not self.path or self.path.startswith("[") else "."
        return _At(f"{step}{sep}{self.path}", self.message)


def _inside(part: str | int, exc: Exception) -> _At:
    at = exc if isinstance(exc, _At) else _At("", str(exc).strip("'\""))
    return at.under(part)


def _union(tp: Any) -> Decoder:
    args = get_args(tp)
    nullable = type(None) in args
    others = [a for a in args if a is not type(None)]

    def decode(value: Any) -> Any:
        if value is None and nullable:
            return None
        if len(others) == 1:
            return from_plain(others[0], value)
        errors = []
        for arg in others:
            try:
                return from_plain(arg, value)
            except (TypeError, ValueError, KeyError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{value!r} matches none of {tp}: {errors}")

    return decode


def _tuple(tp: Any) -> Decoder:
    args = get_args(tp)
    repeated = len(args) == 2 and args[1] is Ellipsis

    def decode(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise TypeError(f"expected a list for {tp}, got {type(value).__name__}")
        if repeated:
            item = _decoder(args[0])
            try:
                return tuple([item(v) for v in value])
            except (TypeError, ValueError, KeyError):
                pass  # decoded again one by one below, to say which item
        items = (args[0],) * len(value) if repeated else args
        if len(items) != len(value):
            raise ValueError(f"expected {len(items)} items, got {len(value)}")
        out = []
        for i, (a, v) in enumerate(zip(items, value, strict=True)):
            try:
                out.append(from_plain(a, v))
            except (TypeError, ValueError, KeyError) as exc:
                raise _inside(i, exc) from None
        return tuple(out)

    return decode


def _set(tp: Any) -> Decoder:
    (arg,) = get_args(tp)

    def decode(value: Any) -> frozenset[Any]:
        if not isinstance(value, list):
            raise TypeError(f"expected a list for {tp}")
        return frozenset(from_plain(arg, v) for v in value)

    return decode


def _dict(tp: Any) -> Decoder:
    kt, vt = get_args(tp)

    def decode(value: Any) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {tp}")
        return {from_plain(kt, k): from_plain(vt, v) for k, v in value.items()}

    return decode


_CONTAINERS: dict[Any, Callable[[Any], Decoder]] = {
    Union: _union,
    types.UnionType: _union,
    tuple: _tuple,
    frozenset: _set,
    set: _set,
    dict: _dict,
}


def _dataclass(tp: type) -> Decoder:
    checked = tp in MODELS
    # (name, decoder, required), worked out at the first value (a type may name
    # itself through its fields).
    fields: list[tuple[str, Decoder, bool]] = []

    def decode(value: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {tp.__name__}")
        if not fields:
            hints = _hints(tp)
            fields.extend(
                (
                    f.name,
                    _decoder(hints[f.name]),
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                )
                for f in dataclasses.fields(tp)  # type: ignore[arg-type]
                if f.init
            )
        kwargs = {}
        for name, field_decoder, required in fields:
            if name in value:
                try:
                    kwargs[name] = field_decoder(value[name])
                except (TypeError, ValueError, KeyError) as exc:
                    raise _inside(name, exc) from None
            elif required:
                raise KeyError(f"{tp.__name__}.{name} is missing")
        built = tp(**kwargs)
        if checked:
            _refuse(own_problems(built))
        return built

    return decode


# Scalars: (accepts, what a refusal says). bool is an int to Python, never to us.
_SCALARS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    str: (lambda v: isinstance(v, str), "a string"),
    bool: (lambda v: isinstance(v, bool), "true/false"),
    type(None): (lambda v: v is None, "null"),
}


def _scalar(tp: Any) -> Decoder:
    rule = _SCALARS.get(tp)
    if rule is None:

        def refuse(value: Any) -> Any:
            raise TypeError(f"cannot decode type {tp!r}")

        return refuse
    accepts, what = rule
    to_float = tp is float

    def decode(value: Any) -> Any:
        if not accepts(value):
            raise TypeError(f"expected {what}, got {kind(value)}")
        return float(value) if to_float else value

    return decode


def encode(event: Event) -> bytes:
    plain = to_plain(event)
    envelope = {k: plain.pop(k) for k in _ENVELOPE}
    doc = {"type": event.TYPE, "v": event.VERSION, **envelope, "data": plain}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode(raw: bytes) -> Event:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptEvent(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CorruptEvent("not a JSON object")
    event_type = doc.get("type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise CorruptEvent(f"unknown event type {event_type!r}")
    version = doc.get("v", 1)
    data = doc.get("data")
    if not isinstance(version, int) or not isinstance(data, dict):
        raise CorruptEvent("missing schema version or data")
    while version < cls.VERSION:
        step = UPCASTERS.get((cls.TYPE, version))
        if step is None:
            raise CorruptEvent(f"no upcaster for {cls.TYPE} v{version}")
        data = step(dict(data))
        version += 1
    if version > cls.VERSION:
        raise CorruptEvent(f"{cls.TYPE} v{version} is newer than this corral (v{cls.VERSION})")
    try:
        return typing.cast(Event, from_plain(cls, {**{k: doc.get(k) for k in _ENVELOPE}, **data}))
    except (TypeError, ValueError, KeyError) as exc:
        raise CorruptEvent(f"{cls.TYPE}: {exc}") from exc


def encode_value(value: Any) -> bytes:
    return json.dumps(to_plain(value), separators=(",", ":"), sort_keys=True).encode()


def decode_value(tp: type[T], raw: bytes) -> T:
    try:
        return typing.cast(T, from_plain(tp, json.loads(raw)))
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptEvent(f"{tp.__name__}: {exc}") from exc


class _Loose:
    """Attribute access over plain JSON, so an event class's `objects()` can name the
    keys of data that does not decode."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def __getattr__(self, name: str) -> Any:
        got = self._value.get(name) if isinstance(self._value, dict) else None
        return _Loose(got) if isinstance(got, dict) else got


def undecodable(raw: bytes, *, key: str, why: str) -> EventUndecodable:
    """What the log says in place of stored bytes that `decode` refused: as much of
    the envelope as can be read, and the object keys the stored type would name."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    stored_type = doc.get("type")
    stored = stored_type if isinstance(stored_type, str) else ""
    cls = EVENT_TYPES.get(stored)
    keys: tuple[str, ...] = ()
    if cls is not None and isinstance(doc.get("data"), dict):
        try:
            named = cls.objects(_Loose(doc["data"]))  # type: ignore[arg-type]
            keys = tuple(k for k in named if isinstance(k, str) and len(k) <= 300)
        except Exception:
            keys = ()
    when = doc.get("time")
    return EventUndecodable(
        id=EventId(
            str(doc.get("id")) if isinstance(doc.get("id"), str) else key.rsplit("/", 1)[-1]
        ),
        time=float(when) if isinstance(when, int | float) and not isinstance(when, bool) else 0.0,
        actor=str(doc.get("actor"))[:200] if isinstance(doc.get("actor"), str) else "",
        key=key,
        stored_type=stored[:100],
        why=why[:500],
        keys=keys,
    )
