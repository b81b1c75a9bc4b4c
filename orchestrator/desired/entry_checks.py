"""The checks every section of a desired-state file applies to its entries: a
name declared twice (`duplicate`), the model's rules that span fields reported at
the key to blame (`spanning`), a pinned node that is not declared (`pin`), and an
optional key's default (`or_default`).

Pure: no I/O, no logging. Must not raise for any input: problems are recorded.
"""

from __future__ import annotations

from typing import TypeVar

from events.specs import NodeSpec
from events.validation import cross_problems
from orchestrator.desired import schema as s
from orchestrator.desired.schema import At, Problems, YamlMapping

T = TypeVar("T")


def or_default(value: T | None, default: T) -> T:
    return default if value is None else value


def duplicate(problems: Problems, first: dict[str, At], name: str, at: At, *, what: str) -> bool:
    """Report `name` if it was seen before; remember it otherwise."""
    if name in first:
        problems.add(
            at,
            f"duplicate {what} name {name!r} (first declared at {first[name].line_ref(at)})",
        )
        return True
    first[name] = at
    return False


# A rule spanning fields names the model's field; the file says it with these keys,
# the first one present taking the blame.
_BLAME = {
    "host_memory_mib": ("host_memory", "memory"),
    "host_cpus": ("host_cpus", "cpus"),
    "secondary": ("secondary",),
    "lost_timeout_s": ("lost_timeout", "suspect_timeout"),
}


def spanning(problems: Problems, m: YamlMapping, spec: object) -> bool:
    """The model's rules that span fields (`events.validation`), reported at the key
    to blame; True when any is broken."""
    found = cross_problems(spec)
    for problem in found:
        keys = _BLAME.get(str(problem.loc[0]), ()) if problem.loc else ()
        key = next((k for k in keys if m.has(k)), None)
        problems.add(m.value_at(key) if key else m.at, problem.message)
    return bool(found)


def pin(problems: Problems, m: YamlMapping, key: str, declared: frozenset[str]) -> str | None:
    """A pinned node name; "" when not pinned; None when invalid (reported)."""
    node = m.opt(key, s.rule(NodeSpec, "name"), "")
    if node and node not in declared:
        problems.add(
            m.value_at(key),
            f"node {node!r} is not declared; declared nodes: {some_names(declared)}",
        )
        return None
    return node


def some_names(names: frozenset[str] | set[str]) -> str:
    """Up to 10 names for a message."""
    shown = sorted(names)
    if not shown:
        return "none"
    return ", ".join(shown[:10]) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")
