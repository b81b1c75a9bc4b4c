"""The planner's greedy step (`reactors.balance.step.search.Search.best`, with its
bounds, batched scoring and rule checks) against brute force: every instance,
every pair of nodes, the move kind `reactors.balance.rules.check_move` allows, scored as
the full score after the move minus the score before.

With a tolerance of 1 the step returns every move that lowers the score; that
set must be exactly the brute force's, with the same deltas (1e-9), at several
points of a plan, on generated clusters with a drained node, with location
tags, and with exclusion tags everywhere (so anti-affinity refuses moves).
With `top` (the lookahead's), what the step keeps begins that list and holds
its first `top` distinct moves.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from reactors.balance.rules import check_move
from reactors.balance.step.lookahead import LOOKAHEAD_TOLERANCE
from reactors.balance.step.search import Candidate, Search, choose
from reactors.balance.work import Work
from reactors.htools.model import LOCATION_TAG_PREFIX, BCluster
from tests.support.states.generated import generated_cluster


def _with_locations(cluster: BCluster) -> BCluster:
    nodes = tuple(replace(n, tags=(f"rack:r{k % 3}",)) for k, n in enumerate(cluster.nodes))
    return replace(
        cluster,
        nodes=nodes,
        cluster_tags=(*cluster.cluster_tags, f"{LOCATION_TAG_PREFIX}rack"),
    )


CLUSTERS = {
    "8-nodes": lambda: generated_cluster(seed=1, full=7, empty=1, instances=70),
    "drained": lambda: generated_cluster(seed=2, full=6, empty=2, instances=60, drained=True),
    "locations": lambda: _with_locations(generated_cluster(seed=5, full=6, empty=2, instances=50)),
}


def _brute(work: Work) -> dict[tuple[int, int, int], float]:
    """Every rule-keeping single move that lowers the score, with its delta."""
    before = work.total()
    n = len(work.names)
    out: dict[tuple[int, int, int], float] = {}
    for i in range(len(work.insts)):
        if not work.movable[i]:
            continue
        p, s = work.p[i], work.s[i]
        for a in range(n):
            for b in range(n):
                if a == b or (a, b) == (p, s) or check_move(work, i, a, b) is None:
                    continue
                trial = work.clone()
                trial.apply(i, a, b)
                d = trial.total() - before
                if d < -1e-9:
                    out[(i, a, b)] = d
    return out


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_every_improving_move_is_found_with_its_exact_delta(name: str) -> None:
    cluster = CLUSTERS[name]()
    work = Work(cluster, frozenset())
    search = Search(work)
    checked = 0
    for step in range(12):
        found = {(c.inst, c.new_p, c.new_s): c.delta for c in search.best(tolerance=1.0)}
        if step in (0, 1, 5, 11):
            brute = _brute(work)
            assert set(found) == set(brute), (step, set(found) ^ set(brute))
            for key, d in brute.items():
                assert abs(found[key] - d) <= 1e-9, (step, key, found[key], d)
            checked += len(brute)
        cands = search.best(tolerance=0.002)
        if not cands:
            break
        pick = choose(cands, work.names, work.insts)
        work.apply(pick.inst, pick.new_p, pick.new_s)
    assert checked > 50


def _first_distinct(cands: list[Candidate], k: int) -> list[tuple[tuple[int, int, int], float]]:
    seen: list[tuple[tuple[int, int, int], float]] = []
    for c in cands:
        key = (c.inst, c.new_p, c.new_s)
        if key not in {s for s, _ in seen}:
            seen.append((key, c.delta))
        if len(seen) == k:
            break
    return seen


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_a_top_limited_step_starts_with_the_same_distinct_moves(name: str) -> None:
    """`best(top=k)` (what the lookahead asks for) keeps fewer candidates and
    scores fewer; what it keeps begins the whole list within the tolerance
    (candidate for candidate, deltas equal) and holds its first k distinct
    moves."""
    work = Work(CLUSTERS[name](), frozenset())
    whole, limited = Search(work), Search(work)
    shorter = scored_whole = scored_top3 = 0
    for _ in range(15):
        before = whole.scored
        full = whole.best(tolerance=LOOKAHEAD_TOLERANCE)
        scored_whole += whole.scored - before
        if not full:
            break
        for k in (1, 3):
            before = limited.scored
            top = limited.best(tolerance=LOOKAHEAD_TOLERANCE, top=k)
            assert top == full[: len(top)]
            assert _first_distinct(top, k) == _first_distinct(full, k)
            if k == 3:
                scored_top3 += limited.scored - before
            shorter += len(top) < len(full)
        pick = choose(full, work.names, work.insts)
        work.apply(pick.inst, pick.new_p, pick.new_s)
    assert shorter > 0
    assert scored_top3 < scored_whole
