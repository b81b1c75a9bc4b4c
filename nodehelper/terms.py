"""The leader's term on the node (safety rule 8): the highest term any mutating
command carried is kept in /var/lib/corral/term; a command of an older term is
refused, one of a newer term raises it. Commands of the current term run holding
the term lock shared, and raising the term takes it exclusive, so once a node has
accepted a new term no command of an older one is still running or starts.

Standard library only; reaches the node only through the environment protocol.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from nodehelper.env import NodeEnv

TERM_PATH = "/var/lib/corral/term"
EXIT_STALE_TERM = 75  # EX_TEMPFAIL: retrying with this term will never work
EXIT_LOCK_BUSY = 69  # EX_UNAVAILABLE: try again


class StaleTerm(Exception):
    def __init__(self, term: int, current: int) -> None:
        super().__init__(
            f"term {term} is older than term {current}, the newest this node has seen; refused"
        )


class TermFileBroken(Exception):
    """The term file holds something other than a number: refuse every mutating
    command rather than guess (an operator fixes or removes the file)."""


def read_term(env: NodeEnv) -> int:
    data = env.read_file(TERM_PATH)
    if data is None:
        return 0
    value = data.decode("ascii", errors="replace").strip()
    if not re.fullmatch(r"0|[1-9][0-9]{0,17}", value):
        raise TermFileBroken(f"{TERM_PATH} holds {value[:40]!r}, not a term")
    return int(value)


@contextlib.contextmanager
def term_held(env: NodeEnv, term: int) -> Iterator[None]:
    """Run the body under `term`, or raise StaleTerm before it runs."""
    while True:  # twice at most: once to raise the term, once to run under it
        with env.term_lock(exclusive=False):
            current = read_term(env)
            if term < current:
                raise StaleTerm(term, current)
            if term == current:
                yield
                return
        with env.term_lock(exclusive=True):
            current = read_term(env)
            if term < current:
                raise StaleTerm(term, current)
            if term > current:
                env.write_file(TERM_PATH, f"{term}\n".encode())
