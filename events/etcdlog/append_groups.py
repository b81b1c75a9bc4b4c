"""Group commit for one store's appends: the appends that wait while another is in
flight go to etcd together, in the next transaction. Every append takes the order
index's next seq (`events.etcdlog.log_order`), so a store sends one at a time; without
grouping, callers queued behind the one in flight each paid a round trip of their
own (at 40 nodes / 1,000 instances: three times the transactions, twice the
orchestrator's CPU). Holds the queue's entries and the choice of a group: no I/O
(the store sends), nothing but the futures from asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from events.model import Event


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitingAppend:
    """One caller's chunk, waiting for its turn (no expected versions: those are
    sent alone, their compare is theirs only), and where its revision goes when
    another caller's turn sends it."""

    events: tuple[Event, ...]
    term: int | None
    done: asyncio.Future[int]

    @property
    def cost(self) -> int:
        """Its transaction operations at most: a put per event and per object."""
        return len(self.events) + len({k for e in self.events for k in e.objects()})


def take_group(
    waiting: list[WaitingAppend], first: WaitingAppend, *, max_ops: int
) -> list[WaitingAppend]:
    """`first` and the entries after it that share its term, while their operations
    fit one transaction (`max_ops`), in arrival order; the ones taken leave
    `waiting`. Each caller's events stay whole, in one transaction."""
    waiting.remove(first)
    group, ops = [first], first.cost
    for entry in list(waiting):
        if entry.done.done():
            continue
        if entry.term != first.term or ops + entry.cost > max_ops:
            break
        waiting.remove(entry)
        group.append(entry)
        ops += entry.cost
    return group


def events_of(group: Sequence[WaitingAppend]) -> list[Event]:
    return [e for entry in group for e in entry.events]
