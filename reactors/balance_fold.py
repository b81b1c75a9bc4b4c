"""The balancer's simplifying pass: an instance moved more than once in a plan is
moved once, straight to where it ends up, where that is a single move kind (or a
relocation of both copies to new nodes, `reactors.balance_rules.check_plan_move`)
and the whole sequence still keeps the rules; moves that end where they started
are dropped. The plan ends in the same placement with fewer moves and less data
copied.

Pure: no I/O, no logging, no asyncio; it rewrites a list of moves, nothing else.
Comes after `reactors.balance_search` (the greedy moves, as `reactors.balance_plan`
collects them), checking sequences with `reactors.balance_rules`; its result goes
back to `reactors.balance_plan`, which builds the `BalancePlan`.
"""

from __future__ import annotations

from collections import Counter

from reactors.balance_model import BCluster
from reactors.balance_rules import valid_sequence
from reactors.balance_work import Work


def fold(
    *, cluster: BCluster, avoid: frozenset[str], moves: list[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """Replace an instance's repeated moves by one move to where it ends up (at
    the place of its first or its last move), when that is a single move kind or
    a relocation and the whole sequence stays within the rules; drop moves that
    end where they started."""
    seq = list(moves)
    base = Work(cluster, avoid)
    changed = True
    while changed:
        changed = False
        counts = Counter(i for i, _, _ in seq)
        for i in sorted(k for k, c in counts.items() if c > 1):
            positions = [n for n, mv in enumerate(seq) if mv[0] == i]
            last = seq[positions[-1]]
            rest = [mv for n, mv in enumerate(seq) if n not in positions]
            options: list[list[tuple[int, int, int]]] = []
            start = _placement_at(cluster, i)
            if (last[1], last[2]) == start:
                options.append(rest)
            else:
                for where in (positions[0], positions[-1] - len(positions) + 1):
                    options.append([*rest[:where], last, *rest[where:]])
            for option in options:
                if valid_sequence(cluster=cluster, avoid=avoid, moves=option, base=base):
                    seq = option
                    changed = True
                    break
            if changed:
                break
    return seq


def _placement_at(cluster: BCluster, i: int) -> tuple[int, int]:
    inst = cluster.instances[i]
    names = [n.name for n in cluster.nodes]
    return names.index(inst.pnode), names.index(inst.snode) if inst.snode else -1
