"""Building blocks of the desired-state loader (`orchestrator.desired.file`): where a
value sits in its YAML file, the list of problems found so far, a reader for YAML
mappings that reports unknown and missing keys, the file's own syntax (sizes like
'24G', durations like '3s', YAML booleans), and `rule`, which holds a value to the
field rule of the one typed model (`events.validation.check_field`) and reports what
it refuses at the line and column of the value at fault.

Pure: no I/O and no logging. A parser never raises: it records a `FileProblem` and
returns None. Messages never repeat a value that may be a secret.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import Any, TypeVar

from ruamel.yaml.scalarbool import ScalarBoolean

from events.fields.rules import kind as _kind
from events.fields.rules import show as _show
from events.fields.sizes import MAX_MIB, fmt_mib, size_text
from events.ids import InvalidName, check_name
from events.validation import Problem, SpecError, check_field

T = TypeVar("T")

_DURATION_RE = re.compile(r"^(\d{1,9}(?:\.\d{1,6})?)\s*(ms|s|m|h)?$")
_DURATION_UNITS = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FileProblem:
    """One thing wrong with a desired-state file, where it is and what was expected."""

    file: str
    line: int  # 1-based; 0 when the problem is about the path itself
    column: int  # 1-based; 0 when the problem is about the path itself
    field: str  # dotted path, e.g. "instances[vm03].memory"
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.field}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class At:
    """Where a value is: file, 1-based line and column, and its dotted field path."""

    file: str
    line: int
    column: int
    field: str

    def moved(self, *, line: int, column: int, field: str | None = None) -> At:
        return At(
            file=self.file,
            line=line,
            column=column,
            field=self.field if field is None else field,
        )

    def sub(self, name: str) -> str:
        return f"{self.field}.{name}" if self.field else name

    def line_ref(self, other: At) -> str:
        """How to point at `self` from a message about `other`."""
        if self.file == other.file:
            return f"line {self.line}"
        return f"{self.file}:{self.line}"


# More problems than anyone reads: checking stops there (a megabyte of nonsense
# once produced 440,000 problems, 450 MiB and 18 s of work).
MAX_PROBLEMS = 200


class TooManyProblems(Exception):
    """Raised by `Problems.add` once MAX_PROBLEMS are recorded: checking stops."""


class Problems:
    """Every problem found so far, in the order found (at most MAX_PROBLEMS), and the
    warnings (never refused)."""

    def __init__(self) -> None:
        self.items: list[FileProblem] = []
        self.warnings: list[FileProblem] = []  # accepted, but worth saying

    def warn(self, at: At, message: str) -> None:
        self.warnings.append(
            FileProblem(
                file=at.file, line=at.line, column=at.column, field=at.field, message=message
            )
        )

    def add(self, at: At, message: str) -> None:
        if len(self.items) >= MAX_PROBLEMS:
            raise TooManyProblems
        self.items.append(
            FileProblem(
                file=at.file, line=at.line, column=at.column, field=at.field, message=message
            )
        )

    def __len__(self) -> int:
        return len(self.items)

    def sorted(self) -> tuple[FileProblem, ...]:
        unique = dict.fromkeys(self.items)
        return tuple(sorted(unique, key=lambda p: (p.file, p.line, p.column, p.field, p.message)))


Parser = Callable[[Problems, Any, At], T | None]


def located(getter: Callable[[], Any], fallback: At, field: str) -> At:
    """Position from a ruamel `.lc` lookup (0-based) as a 1-based At, else `fallback`."""
    try:
        pos = getter()
        line, column = int(pos[0]) + 1, int(pos[1]) + 1
    except Exception:  # merged keys and odd nodes have no recorded position
        return fallback.moved(line=fallback.line, column=fallback.column, field=field)
    return fallback.moved(line=line, column=column, field=field)


def node_at(value: Any, fallback: At) -> At:
    """The position of a mapping or sequence itself (its first entry), else `fallback`."""
    lc = getattr(value, "lc", None)
    if lc is None:
        return fallback
    return located(lambda: (lc.line, lc.col), fallback, fallback.field)


def item_at(seq: Any, index: int, parent: At, field: str) -> At:
    return located(lambda: seq.lc.item(index), parent, field)


def kind(value: Any) -> str:
    """What a YAML value is, for messages (never the value itself)."""
    if isinstance(value, date):
        return "a date"
    return _kind(plain(value) if is_bool(value) else value)


def show(value: Any) -> str:
    """A short rendering of a scalar for messages."""
    return _show(plain(value) if is_bool(value) else value)


def is_bool(value: Any) -> bool:
    return isinstance(value, bool | ScalarBoolean)


class YamlMapping:
    """A YAML mapping being read. Reports a non-mapping and unknown keys when made."""

    def __init__(
        self,
        problems: Problems,
        value: Any,
        at: At,
        *,
        allowed: Sequence[str] | None,
        what: str,
    ) -> None:
        """`allowed` None: any key (the caller checks them)."""
        self.problems = problems
        self.at = node_at(value, at) if isinstance(value, dict) else at
        self.value: dict[Any, Any] = value if isinstance(value, dict) else {}
        self.ok = isinstance(value, dict)
        if not self.ok:
            problems.add(at, f"{what} must be a mapping, got {kind(value)}")
            return
        if allowed is None:
            return
        for key in self.value:
            if isinstance(key, str) and key in allowed:
                continue
            name = show(key) if isinstance(key, str | int | float) else kind(key)
            problems.add(
                self.key_at(key),
                f"unknown key {name} in {what}; allowed: {', '.join(allowed)}",
            )

    def has(self, key: str) -> bool:
        return key in self.value

    def key_at(self, key: Any) -> At:
        name = key if isinstance(key, str) else "?"
        return located(lambda: self.value.lc.key(key), self.at, self.at.sub(name))  # type: ignore[attr-defined]

    def value_at(self, key: str) -> At:
        value = self.value.get(key)
        if isinstance(value, dict | list):
            fallback = located(lambda: self.value.lc.value(key), self.at, self.at.sub(key))  # type: ignore[attr-defined]
            return node_at(value, fallback)
        return located(lambda: self.value.lc.value(key), self.at, self.at.sub(key))  # type: ignore[attr-defined]

    def get(self, key: str) -> tuple[Any, At]:
        return self.value.get(key), self.value_at(key)

    def missing(self, key: str, message: str = "") -> None:
        self.problems.add(
            self.at.moved(line=self.at.line, column=self.at.column, field=self.at.sub(key)),
            message or f"required field {key!r} is missing",
        )

    def opt(self, key: str, parse: Parser[T], default: T) -> T | None:
        """The parsed value; `default` when absent; None when invalid (reported)."""
        if key not in self.value:
            return default
        return parse(self.problems, *self.get(key))

    def req(
        self, key: str, parse: Parser[T], default: T | None = None, message: str = ""
    ) -> T | None:
        """Like `opt`, but reports the key missing when absent and no default is given."""
        if key not in self.value:
            if default is None:
                self.missing(key, message)
            return default
        return parse(self.problems, *self.get(key))


def items(problems: Problems, value: Any, at: At, *, what: str) -> Iterator[tuple[int, Any, At]]:
    """The entries of a YAML list with their positions; reports a non-list."""
    if not isinstance(value, list):
        problems.add(at, f"{what} must be a list, got {kind(value)}")
        return
    for i, item in enumerate(value):
        yield i, item, item_at(value, i, at, f"{at.field}[{i}]")


def text(problems: Problems, value: Any, at: At) -> str | None:
    if not isinstance(value, str) or not value:
        problems.add(at, f"expected a non-empty string, got {kind(value)}")
        return None
    if any(c in value for c in "\n\r\0"):
        problems.add(at, "must be one line (no newlines or NUL characters)")
        return None
    return str(value)


# ------------------------------------------------------------------ the model's rules


def at_loc(value: Any, at: At, loc: Sequence[int | str]) -> At:
    """The position of the part of `value` that `loc` names (a list index, a key),
    as deep as the YAML has positions for it."""
    for part in loc:
        if isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value):
            at = item_at(value, part, at, f"{at.field}[{part}]")
            value = value[part]
        elif isinstance(part, str) and isinstance(value, dict) and part in value:
            inner, field = value, at.sub(part)
            at = located(lambda: inner.lc.value(part), at, field)  # type: ignore[attr-defined]  # noqa: B023
            value = value[part]
        else:
            break
    return at


def report(problems: Problems, value: Any, at: At, found: Sequence[Problem], skip: int) -> None:
    """Each model problem at the position of the value it names (`skip` leading loc
    parts are the field itself)."""
    for problem in found:
        problems.add(at_loc(value, at, problem.loc[skip:]), problem.message)


def rule(tp: type, field: str) -> Parser[Any]:
    """The model's rule for `field` of spec `tp` (the one every entry point uses), as
    a parser of the YAML value."""

    def parse(problems: Problems, value: Any, at: At) -> Any:
        if value is None:
            problems.add(at, "expected a value, got nothing (null)")
            return None
        try:
            return check_field(tp, field, plain(value))
        except SpecError as exc:
            report(problems, value, at, exc.problems, skip=1)
            return None

    return parse


def plain(value: Any) -> Any:
    """ruamel's scalars as plain Python (its booleans are ints, its strings str)."""
    if isinstance(value, ScalarBoolean):
        return bool(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def name(what: str) -> Parser[str]:
    """A name that is no field of the model (the cluster's)."""

    def parse(problems: Problems, value: Any, at: At) -> str | None:
        if not isinstance(value, str):
            problems.add(at, f"{what} must be a string, got {kind(value)}")
            return None
        try:
            return check_name(str(value), what=what)
        except InvalidName as exc:
            problems.add(at, str(exc))
            return None

    return parse


def listed(parse: Parser[T], *, what: str, non_empty: bool = False) -> Parser[tuple[T, ...]]:
    """A parser for a list whose entries each go through `parse`."""

    def parse_list(problems: Problems, value: Any, at: At) -> tuple[T, ...] | None:
        if not isinstance(value, list):
            problems.add(at, f"{what} must be a list, got {kind(value)}")
            return None
        if non_empty and not value:
            problems.add(at, f"{what} must not be empty")
            return None
        out: list[T] = []
        ok = True
        for _, item, item_pos in items(problems, value, at, what=what):
            parsed = parse(problems, item, item_pos)
            if parsed is None:
                ok = False
            else:
                out.append(parsed)
        return tuple(out) if ok else None

    return parse_list


def boolean(problems: Problems, value: Any, at: At) -> bool | None:
    if not is_bool(value):
        problems.add(at, f"expected true or false, got {kind(value)}")
        return None
    return bool(value)


def size(problems: Problems, value: Any, at: At) -> int | None:
    """A size in MiB: a whole number of MiB, or '512M', '24G', '2T' (binary units)."""
    expected = "expected a size: a whole number of MiB or a string like '512M', '24G', '2T'"
    if is_bool(value) or not isinstance(value, int | str):
        problems.add(at, f"{expected}, got {kind(value)}")
        return None
    parsed = Fraction(int(value)) if isinstance(value, int) else size_text(value)
    if parsed is None:
        problems.add(at, f"{show(value)} is not a size; {expected}")
        return None
    mib = parsed
    if mib <= 0:
        problems.add(at, f"size {show(value)} must be greater than zero")
        return None
    if mib.denominator != 1:
        problems.add(at, f"size {show(value)} is not a whole number of MiB")
        return None
    if mib > MAX_MIB:
        problems.add(at, f"size {show(value)} is impossibly large (more than 1 EiB)")
        return None
    return int(mib)


def duration(problems: Problems, value: Any, at: At) -> float | None:
    """Seconds: a number, or '500ms', '3s', '2m', '1h'."""
    expected = "expected a duration: a number of seconds or a string like '500ms', '3s', '2m'"
    if is_bool(value) or not isinstance(value, int | float | str):
        problems.add(at, f"{expected}, got {kind(value)}")
        return None
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match is None:
            problems.add(at, f"{show(value)} is not a duration; {expected}")
            return None
        seconds = float(Fraction(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"])
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        problems.add(at, f"duration {show(value)} must be greater than zero")
        return None
    return seconds


def choice(allowed: Sequence[str]) -> Parser[str]:
    def parse(problems: Problems, value: Any, at: At) -> str | None:
        if not isinstance(value, str) or value not in allowed:
            problems.add(at, f"{show(value)} is not one of: {', '.join(allowed)}")
            return None
        return str(value)

    return parse


__all__ = ["fmt_mib"]
