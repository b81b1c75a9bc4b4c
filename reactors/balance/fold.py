"""The balancer's simplifying pass: an instance moved more than once in a plan is
moved once, straight to where it ends up, where that is a single move kind (or a
relocation of both copies to new nodes, `reactors.balance.rules.check_plan_move`)
and the whole sequence still keeps the rules; moves that end where they started
are dropped. The plan ends in the same placement with fewer moves and less data
copied.

Pure: no I/O, no logging, no asyncio; it rewrites a list of moves, nothing else.
"""

from __future__ import annotations

from collections import Counter

from reactors.balance.rules import check_plan_move
from reactors.balance.work import Work
from reactors.htools.model import BCluster

# The folding pass keeps the working model at every this many moves of the
# current sequence, to start a check from the nearest one (`_States`).
_STRIDE = 8

_Moves = list[tuple[int, int, int]]


def fold(*, cluster: BCluster, avoid: frozenset[str], moves: _Moves) -> _Moves:
    """Replace an instance's repeated moves by one move to where it ends up (at
    the place of its first or its last move), when that is a single move kind or
    a relocation and the whole sequence stays within the rules; drop moves that
    end where they started.

    A folded sequence is the same as the current one before the instance's
    first move, and after its last move the placement (and so every figure a
    rule reads) is the same as the current sequence's there, whose moves keep
    the rules; so only the moves in between are checked, from the working model
    before the first (`_States`). That is the whole sequence's check."""
    seq = list(moves)
    states = _States(Work(cluster, avoid), seq)
    changed = True
    while changed:
        changed = False
        counts = Counter(i for i, _, _ in seq)
        for i in sorted(k for k, c in counts.items() if c > 1):
            positions = [n for n, mv in enumerate(seq) if mv[0] == i]
            last = seq[positions[-1]]
            rest = [mv for n, mv in enumerate(seq) if n not in positions]
            options: list[_Moves] = []
            start = _placement_at(cluster, i)
            if (last[1], last[2]) == start:
                options.append(rest)
            else:
                for where in (positions[0], positions[-1] - len(positions) + 1):
                    options.append([*rest[:where], last, *rest[where:]])
            first = positions[0]
            tail = len(seq) - positions[-1] - 1  # moves after its last, unchanged
            for option in options:
                if states.keeps_rules(option, first, len(option) - tail):
                    seq = option
                    states.changed(seq, first)
                    changed = True
                    break
            if changed:
                break
    return seq


class _States:
    """The working model before some moves of the current sequence (every
    `_STRIDE`-th), built as they are asked for and kept until the sequence
    changes before them."""

    def __init__(self, base: Work, seq: _Moves) -> None:
        self.seq = seq
        self.kept: dict[int, Work] = {0: base}

    def keeps_rules(self, option: _Moves, lo: int, hi: int) -> bool:
        """Whether option[lo:hi] keep the rules one after another, from the
        working model before move `lo` (where `option` and the current
        sequence agree on every earlier move)."""
        work = self._before(lo)
        for i, new_p, new_s in option[lo:hi]:
            if check_plan_move(work, i, new_p, new_s) is None:
                return False
            work.apply(i, new_p, new_s)
        return True

    def changed(self, seq: _Moves, at: int) -> None:
        """The current sequence is now `seq`, the same as before up to `at`."""
        self.seq = seq
        self.kept = {n: w for n, w in self.kept.items() if n <= at}

    def _before(self, at: int) -> Work:
        """A copy of the working model before move `at` of the current sequence."""
        n = max(k for k in self.kept if k <= at)
        work = self.kept[n].clone()
        while n < at:
            i, new_p, new_s = self.seq[n]
            work.apply(i, new_p, new_s)
            n += 1
            if n % _STRIDE == 0 and n not in self.kept:
                self.kept[n] = work.clone()
        return work


def _placement_at(cluster: BCluster, i: int) -> tuple[int, int]:
    inst = cluster.instances[i]
    names = [n.name for n in cluster.nodes]
    return names.index(inst.pnode), names.index(inst.snode) if inst.snode else -1
