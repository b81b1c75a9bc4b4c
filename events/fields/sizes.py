"""Numbers with bounds: sizes in MiB (at most 1 EiB, anything bigger is a typo),
CPU counts, ports, durations and ratios. Whole numbers are whole numbers: `true`,
`"5"` and `5.5` are refused, not coerced.

Pure: no I/O, no logging.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Annotated

from events.fields.rules import FieldError, before, kind, schema, show

MAX_MIB = 2**40  # 1 EiB
MAX_CPUS = 4096


_SIZE_RE = re.compile(r"(\d{1,15}(?:\.\d{1,6})?)\s*(?:([mgtp])(?:i?b|i)?)?", re.IGNORECASE)
_UNITS = {"m": 1, "g": 1024, "t": 1024**2, "p": 1024**3}


def size_text(text: str) -> Fraction | None:
    """A size written for people, in MiB: '10240' (MiB), '512M', '24G', '1.5T', '2TiB',
    '10GB' (binary units whatever the spelling); None when it is not one. The caller
    checks it is a whole, positive number of MiB."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        return None
    return Fraction(match.group(1)) * _UNITS[(match.group(2) or "m").lower()]


def fmt_mib(mib: int) -> str:
    for unit, mult in (("T", 1024 * 1024), ("G", 1024)):
        if mib % mult == 0:
            return f"{mib // mult}{unit}"
    return f"{mib}M"


def whole(lo: int, hi: int) -> object:
    """A whole number from `lo` to `hi`."""

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"expected a whole number from {lo} to {hi}, got {kind(value)}")
        if not lo <= value <= hi:
            raise FieldError(f"{value} is out of range: expected {lo} to {hi}")
        return value

    return before(check)


def _mib(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"expected a size in MiB (a whole number), got {kind(value)}")
    if value <= 0:
        raise FieldError(f"size {value} must be greater than zero")
    if value > MAX_MIB:
        raise FieldError(f"size {value} MiB is impossibly large (more than 1 EiB)")
    return value


def _positive(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"expected a number greater than 0, got {kind(value)}")
    if not math.isfinite(value) or value <= 0:
        raise FieldError(f"{show(value)} must be a finite number greater than 0")
    return float(value)


SizeMiB = Annotated[int, before(_mib), schema(type="integer", minimum=1, maximum=MAX_MIB)]
CpuCount = Annotated[int, whole(1, MAX_CPUS), schema(type="integer", minimum=1, maximum=MAX_CPUS)]
HostCpus = Annotated[int, whole(0, MAX_CPUS), schema(type="integer", minimum=0, maximum=MAX_CPUS)]
Port = Annotated[int, whole(1, 65535), schema(type="integer", minimum=1, maximum=65535)]
Count = Annotated[int, whole(0, 1000), schema(type="integer", minimum=0, maximum=1000)]
Positive = Annotated[float, before(_positive), schema(type="number", exclusiveMinimum=0)]
