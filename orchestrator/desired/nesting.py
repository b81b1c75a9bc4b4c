"""How deeply a YAML text nests its flow collections (`[...]`, `{...}`), found by one
pass over the characters before the YAML parser sees them. ruamel's scanner takes
time quadratic in that depth: 5,000 nested brackets (10 KB) cost it 7 to 27 s
before it gave up with a RecursionError, on the CLI or in the API's plan worker.
No desired-state file nests that deep, so a text that does is refused at once,
at the line and column where it went too deep.

The scan skips comments and quoted scalars (a quote opens one only where a token
can start). It may count a bracket inside a plain or block scalar; that only
matters past `MAX_FLOW_DEPTH` levels. Must not: parse YAML, or do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_FLOW_DEPTH", "TooDeep", "too_deep"]

MAX_FLOW_DEPTH = 100
_OPEN = frozenset("[{")
_CLOSE = frozenset("]}")
_TOKEN_START = frozenset(":-[{,?")


@dataclass(frozen=True, slots=True, kw_only=True)
class TooDeep:
    """Where the text first went past `MAX_FLOW_DEPTH` (1-based)."""

    line: int
    column: int


class _Scan:
    """The scanner's state between characters."""

    def __init__(self) -> None:
        self.depth = 0
        self.quote = ""  # "'" or '"' while inside a quoted scalar
        self.comment = False
        self.escaped = False
        self.last = "\n"  # the last character that is not a space or a tab
        self.after_space = False  # the character before this one was a space or a tab

    def quoted(self, ch: str) -> None:
        if self.quote == '"' and self.escaped:
            self.escaped = False
        elif self.quote == '"' and ch == "\\":
            self.escaped = True
        elif ch == self.quote:
            self.quote = ""

    def plain(self, ch: str) -> bool:
        """Take one character outside quotes and comments; True when the depth
        went past the limit."""
        if ch == "#" and (self.last == "\n" or self.after_space):
            self.comment = True
        elif ch in "'\"" and (self.last in _TOKEN_START or self.last == "\n"):
            self.quote = ch
        elif ch == "'" and self.last == "'" and not self.after_space:
            self.quote = ch  # '' in a single-quoted scalar: its quote, escaped
        elif ch in _OPEN:
            self.depth += 1
        elif ch in _CLOSE:
            self.depth = max(0, self.depth - 1)
        return self.depth > MAX_FLOW_DEPTH


def too_deep(text: str) -> TooDeep | None:
    """Where `text` nests flow collections more than `MAX_FLOW_DEPTH` deep, if it does."""
    scan = _Scan()
    line, column = 1, 0
    for ch in text:
        column += 1
        if ch == "\n":
            line, column = line + 1, 0
            scan.comment, scan.last, scan.after_space = False, "\n", False
            continue
        if scan.comment:
            continue
        if scan.quote:
            scan.quoted(ch)
        elif scan.plain(ch):
            return TooDeep(line=line, column=column)
        if ch in " \t":
            scan.after_space = True
        else:
            scan.last, scan.after_space = ch, False
    return None
