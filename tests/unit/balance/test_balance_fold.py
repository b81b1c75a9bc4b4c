"""The balancer's last passes against slower, plainer versions of themselves.

The folding pass (`reactors.balance.fold.fold`) checks only the moves between an
instance's first and last move, from a kept working model; it must fold exactly
as checking every folded sequence whole does (`_fold_checking_whole`, the plain
version written here). `consider` works out every plan's figures without
building it, and `keep_plan` builds only the one it keeps; a plan's figures,
where it is dropped, must be those of the same plan built and kept.
"""

from __future__ import annotations

from collections import Counter

import pytest

from reactors.balance.fold import fold
from reactors.balance.plan import Pick, SearchLimits, SearchSpec, plan_balance, run_search
from reactors.balance.rules import valid_sequence
from reactors.htools.model import BCluster
from tests.support.states.generated import generated_cluster

_Moves = list[tuple[int, int, int]]


def _fold_checking_whole(cluster: BCluster, moves: _Moves) -> _Moves:
    """`fold` as it reads: each candidate sequence checked from the start."""
    seq = list(moves)
    names = [n.name for n in cluster.nodes]
    changed = True
    while changed:
        changed = False
        counts = Counter(i for i, _, _ in seq)
        for i in sorted(k for k, c in counts.items() if c > 1):
            positions = [n for n, mv in enumerate(seq) if mv[0] == i]
            last = seq[positions[-1]]
            rest = [mv for n, mv in enumerate(seq) if n not in positions]
            inst = cluster.instances[i]
            start = (names.index(inst.pnode), names.index(inst.snode) if inst.snode else -1)
            if (last[1], last[2]) == start:
                options = [rest]
            else:
                options = [
                    [*rest[:where], last, *rest[where:]]
                    for where in (positions[0], positions[-1] - len(positions) + 1)
                ]
            for option in options:
                if valid_sequence(cluster=cluster, avoid=frozenset(), moves=option):
                    seq, changed = option, True
                    break
            if changed:
                break
    return seq


# (seed, full nodes, empty nodes, instances, drained, the search whose moves fold)
CASES = [
    pytest.param(13, 13, 3, 520, False, "greedy", id="16-nodes-520"),
    pytest.param(4, 12, 4, 180, True, "ahead", id="16-nodes-drained"),
    pytest.param(1, 7, 1, 70, False, "pairs", id="8-nodes"),
]


@pytest.mark.parametrize(("seed", "full", "empty", "count", "drained", "pick"), CASES)
def test_folding_checks_what_checking_every_sequence_whole_would(
    seed: int, full: int, empty: int, count: int, drained: bool, pick: Pick
) -> None:
    start = generated_cluster(seed=seed, full=full, empty=empty, instances=count, drained=drained)
    spec = SearchSpec(name=pick, width=1 if pick == "greedy" else 3, pick=pick)
    run = run_search(cluster=start, avoid=frozenset(), spec=spec, limits=SearchLimits())
    moves = list(run.moves)
    folded = fold(cluster=start, avoid=frozenset(), moves=moves)
    assert folded == _fold_checking_whole(start, moves)
    assert len(folded) < len(moves)  # something was folded
    assert valid_sequence(cluster=start, avoid=frozenset(), moves=folded)


def test_a_dropped_plans_figures_are_those_of_it_built() -> None:
    start = generated_cluster(seed=4, full=12, empty=4, instances=180, drained=True)
    # (by "budget" and "score" alike, as "moves" stops the other searches early)
    by_budget = plan_balance(cluster=start, prefer="budget")
    by_score = plan_balance(cluster=start, prefer="score")
    assert by_budget.search != by_score.search
    assert by_budget.summary() in by_score.dropped
    assert by_score.summary() in by_budget.dropped
    assert {by_budget.search, *(d.search for d in by_budget.dropped)} == {
        by_score.search,
        *(d.search for d in by_score.dropped),
    }
