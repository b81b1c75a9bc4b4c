"""Why a balance plan leaves instances where they are: those the balancer never
moves (`why_pinned`: not drbd, forthcoming, auto_balance off, spanning two
node groups), and those it would move, because a move would lower the score,
but every such move breaks a rule (N+1, memory, disk, or a policy: the vCPU
ratio, anti-affinity, failure domains), each with the best of those moves and
the rule it breaks (`held_back`).

Pure: no I/O, no logging; it judges a cluster, it moves nothing.

A move's effect on the score is worked out exactly from the two to four nodes it
changes (`move_delta`, the balancer's own figures), not by the search's bounds;
every single move of every instance is tried, so this costs about as much as
one step of the greedy search done plainly.
"""

from __future__ import annotations

from dataclasses import dataclass

from reactors.balance.moves import MoveKind
from reactors.balance.rules import move_kind, refusal
from reactors.balance.step.deltas import Deltas
from reactors.balance.step.exact import move_delta, single_moves
from reactors.balance.work import Work, why_pinned
from reactors.htools.model import BCluster


@dataclass(frozen=True, slots=True, kw_only=True)
class Pinned:
    instance: str
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldBack:
    """An instance whose best move would lower the score by `gain` but breaks
    the rule `why`."""

    instance: str
    primary: str
    secondary: str
    kind: MoveKind
    new_primary: str
    new_secondary: str
    gain: float
    why: str


def pinned(cluster: BCluster) -> tuple[Pinned, ...]:
    """The instances the balancer never moves, with the reason."""
    out: list[Pinned] = []
    for inst in cluster.instances:
        why = why_pinned(cluster, inst)
        if why is not None:
            out.append(Pinned(instance=inst.name, why=why))
    return tuple(out)


def held_back(
    cluster: BCluster, *, avoid: frozenset[str] = frozenset(), min_gain: float = 0.0
) -> tuple[HeldBack, ...]:
    """For every movable instance whose best single move (rules aside) would
    lower the score by more than `min_gain` and breaks a rule, that move and the
    rule; the largest gains first. An instance with a move that gains and keeps
    every rule is not listed (planning again would take it)."""
    w = Work(cluster, avoid)
    deltas = Deltas(w)
    deltas.start()
    out: list[HeldBack] = []
    for i, movable in enumerate(w.movable):
        if not movable:
            continue
        best: tuple[float, int, int] | None = None
        allowed_gain = False
        for new_p, new_s in single_moves(w, i):
            d = move_delta(w, deltas, i, new_p, new_s)
            if not d < -min_gain:
                continue
            if refusal(w, i, new_p, new_s) is None:
                allowed_gain = True
                break
            if best is None or d < best[0]:
                best = (d, new_p, new_s)
        if allowed_gain or best is None:
            continue
        d, new_p, new_s = best
        kind = move_kind(w, i, new_p, new_s)
        why = refusal(w, i, new_p, new_s)
        assert kind is not None and why is not None
        out.append(
            HeldBack(
                instance=w.insts[i].name,
                primary=w.names[w.p[i]],
                secondary=w.names[w.s[i]],
                kind=kind,
                new_primary=w.names[new_p],
                new_secondary=w.names[new_s],
                gain=-d,
                why=why,
            )
        )
    out.sort(key=lambda h: (-h.gain, h.instance))
    return tuple(out)
