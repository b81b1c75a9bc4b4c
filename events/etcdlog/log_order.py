"""The log's order index: which events each append stored, in a key order that
is the log's order, so a reader pages the log by key (cheap in etcd) instead of
by create revision (etcd 3.4 answers any Range sorted or filtered by revision by
reading every key of the range, then sorting and truncating: a page cost a read
of the whole log, docs/performance.md).

Key layout under `/corral/<cluster>/`:
- `order/<seq:016d>`: written in the same transaction as the events of one
  append; the value lists their ids in append order, one per line. Its create
  revision is the revision of those events.
- `order-next`: the next `seq`. Every append compares its mod revision with the
  one the writer last saw and puts seq + 1, so two appends never take the same
  seq and seq order is revision order (no gap, no duplicate).
- `order-legacy`: written by the append that created `order-next` when events
  were already stored (a log older than the index): events with a create
  revision below `order-next`'s are read the old way. Retention deletes it with
  the last of those events.

Holds the layout only: must not talk to etcd.
"""

from __future__ import annotations

from dataclasses import dataclass

ORDER_DIR = b"order/"
COUNTER = b"order-next"
LEGACY = b"order-legacy"


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCursor:
    """A writer's view of `order-next`: the seq its next append takes and the
    counter's mod revision it compares (0: the counter does not exist yet)."""

    seq: int
    mod_revision: int


def order_key(root: bytes, seq: int) -> bytes:
    return root + ORDER_DIR + b"%016d" % seq


def seq_of(root: bytes, key: bytes) -> int:
    return int(key[len(root) + len(ORDER_DIR) :])


def encode_ids(ids: list[str]) -> bytes:
    if any("\n" in i for i in ids):
        raise ValueError("an event id may not hold a newline")
    return "\n".join(ids).encode()


def decode_ids(value: bytes) -> list[str]:
    return value.decode(errors="replace").split("\n") if value else []


def parse_counter(value: bytes) -> int:
    return int(value) if value.isdigit() else 0
