"""Numbers as htools read them from their text files and `-U` utilisation files:
Haskell's `read` through Ganeti's `tryRead`, so that corral accepts the numbers
`hinfo` accepts and refuses the ones it refuses.

Pure: no I/O, no logging; it converts one string, it knows nothing of the file.

What `read` takes (checked against hinfo 3.0.2): leading whitespace, balanced
parentheses with whitespace inside them, a minus sign (whitespace may follow it,
inside the parentheses), decimal, `0x` hexadecimal and `0o` octal integers, and
for Doubles also a fraction and an exponent (`8.192e3`, `8192E+0`). It refuses
trailing whitespace, a plus sign, `1_024`, `0b1`, a fraction in an integer
field and an exponent in an integer field. htools also read `NaN` and
`Infinity` as Doubles; corral refuses them (no size is infinite), naming the
field.
"""

from __future__ import annotations

import re

_INTEGER = r"(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|[0-9]+)"
_DECIMAL = r"[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_WRAPPED = r"^\s*(?P<open>(?:\(\s*)*)(?P<minus>-\s*)?(?P<literal>{})(?P<close>(?:\s*\))*)$"
_INT_RE = re.compile(_WRAPPED.format(_INTEGER))
_DOUBLE_RE = re.compile(_WRAPPED.format(f"{_INTEGER}|{_DECIMAL}|NaN|Infinity"))

# Haskell's Int is 64 bits; a larger literal is not a size anyone means.
_INT_LIMIT = 2**63


def _match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    m = pattern.match(text)
    if m is None or m.group("open").count("(") != m.group("close").count(")"):
        return None
    return m


def _integer(literal: str) -> int:
    if literal[:2] in ("0x", "0X"):
        return int(literal[2:], 16)
    if literal[:2] in ("0o", "0O"):
        return int(literal[2:], 8)
    return int(literal, 10)


def read_int(text: str) -> int:
    """`text` as Haskell reads an Int; ValueError when htools would refuse it."""
    m = _match(_INT_RE, text)
    if m is None:
        raise ValueError(f"not an integer: {text!r}")
    value = _integer(m.group("literal"))
    if value >= _INT_LIMIT:
        raise ValueError(f"integer out of range: {text!r}")
    return -value if m.group("minus") else value


def read_double(text: str) -> float:
    """`text` as Haskell reads a Double; ValueError when htools would refuse
    it, and for NaN and Infinity, which htools read but no size can be."""
    m = _match(_DOUBLE_RE, text)
    if m is None:
        raise ValueError(f"not a number: {text!r}")
    literal = m.group("literal")
    if literal in ("NaN", "Infinity"):
        raise ValueError(f"not a finite number: {text!r}")
    value = float(_integer(literal)) if re.fullmatch(_INTEGER, literal) else float(literal)
    return -value if m.group("minus") else value


def show_double(value: float) -> str:
    """A Double the way htools' reader takes it back exactly: an integer without
    a fraction, anything else in Python's shortest round-trip form (which
    Haskell's `read` parses to the same Double)."""
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text
