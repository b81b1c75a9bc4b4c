"""Which events a reader asks for: `since` (a revision, an ISO time or an age such as
`10m`) and the type and object filters of `corral events` and `/api/v1/events`.

Pure: no I/O, no logging; `now` is passed in. Must not read the log itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from events.model import Event

_RELATIVE = re.compile(r"^(\d{1,9})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SINCE_HELP = "a revision, an ISO time or an age like 10m"


def parse_since(value: str | None, *, now: float) -> tuple[int, float]:
    """(from_revision, from_time) for `since`; ValueError when it is none of the
    three forms."""
    if not value:
        return 0, 0.0
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value), 0.0
    m = _RELATIVE.fullmatch(value)
    if m:
        return 0, now - int(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return 0, datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{value!r} is not {SINCE_HELP}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Types match by name or prefix (`node.` matches `node.health`); objects by key
    (`instance/web1`) or bare name (`web1`); all filters must match."""

    types: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    since_time: float = 0.0

    @classmethod
    def of(
        cls, *, types: Iterable[str] = (), objects: Iterable[str] = (), since_time: float = 0.0
    ) -> EventFilter:
        return cls(
            types=tuple(t for t in types if t),
            objects=tuple(o for o in objects if o),
            since_time=since_time,
        )

    def matches(self, event: Event) -> bool:
        if self.since_time and event.time < self.since_time:
            return False
        if self.types and not any(t == event.TYPE or event.TYPE.startswith(t) for t in self.types):
            return False
        if self.objects:
            keys = event.objects()
            names = {k.partition("/")[2] for k in keys}
            if not any(o in keys or o in names for o in self.objects):
                return False
        return True
