"""The plain, exact greedy step (`reactors.balance.step.exact.ExactSearch`, the step
on clusters whose instances carry `hbal -U` utilisation weights) against brute
force: every instance, every pair of nodes the rules allow
(`reactors.balance.rules.check_move`), scored as the full score after the move
minus the score before. The working model's score with weights must be htools'
(`reactors.htools.score`), before and after moves; the step must find exactly
the brute force's improving moves with their deltas (1e-9), and `move_delta`
(what `corral balance` explains held-back instances with) must give the same
deltas, on generated clusters with weights, a drained node and locations, and
on one with desired locations (which only this step scores).
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from reactors.balance.plan import _cluster_after
from reactors.balance.rules import check_move
from reactors.balance.step.deltas import Deltas
from reactors.balance.step.exact import ExactSearch, move_delta
from reactors.balance.step.search import choose
from reactors.balance.work import Work
from reactors.htools.loaded import DESIRED_LOCATION_PREFIX
from reactors.htools.model import BCluster, Util
from reactors.htools.score import score
from tests.support.states.generated import generated_cluster
from tests.unit.balance.test_balance_search import _brute, _with_locations


def _weighted(cluster: BCluster, seed: int) -> BCluster:
    rng = random.Random(seed)

    def weight() -> float:
        return round(rng.uniform(0.1, 3.0), 2)

    insts = tuple(
        replace(i, util=Util(cpu=weight(), mem=weight(), dsk=weight(), net=weight()))
        if rng.random() < 0.9
        else i
        for i in cluster.instances
    )
    return replace(cluster, instances=insts)


def _desired(cluster: BCluster) -> BCluster:
    """Locations, and desired locations (`htools:desiredlocation:rack`) on
    two instances in three, some naming two racks, without weights."""
    located = _with_locations(cluster)
    insts = tuple(
        replace(
            i, tags=(*i.tags, f"rack:r{n % 3}", *((f"rack:r{(n + 1) % 3}",) if n % 4 == 0 else ()))
        )
        if n % 3
        else i
        for n, i in enumerate(located.instances)
    )
    tags = (*located.cluster_tags, f"{DESIRED_LOCATION_PREFIX}rack")
    return replace(located, instances=insts, cluster_tags=tags)


CLUSTERS = {
    "desired-locations": lambda: _desired(generated_cluster(seed=6, full=6, empty=2, instances=50)),
    "8-nodes": lambda: _weighted(generated_cluster(seed=1, full=7, empty=1, instances=70), 1),
    "drained": lambda: _weighted(
        generated_cluster(seed=2, full=6, empty=2, instances=60, drained=True), 2
    ),
    "locations": lambda: _weighted(
        _with_locations(generated_cluster(seed=5, full=6, empty=2, instances=50)), 3
    ),
}


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_every_improving_move_is_found_with_its_exact_delta(name: str) -> None:
    cluster = CLUSTERS[name]()
    work = Work(cluster, frozenset())
    assert work.plain
    search = ExactSearch(work)
    checked = 0
    for step in range(8):
        assert abs(work.total() - score(_cluster_after(cluster, work)).total) <= 1e-6
        found = {(c.inst, c.new_p, c.new_s): c.delta for c in search.best(tolerance=1.0)}
        if step in (0, 3, 7):
            brute = _brute(work)
            assert set(found) == set(brute), (
                step,
                [(k, found.get(k)) for k in set(found) ^ set(brute)],
            )
            deltas = Deltas(work)
            deltas.start()
            for key, d in brute.items():
                assert abs(found[key] - d) <= 1e-9, (step, key, found[key], d)
                assert abs(move_delta(work, deltas, *key) - d) <= 1e-9
            checked += len(brute)
        cands = search.best(tolerance=0.002)
        if not cands:
            break
        for c in cands:
            assert check_move(work, c.inst, c.new_p, c.new_s) is c.kind
        pick = choose(cands, work.names, work.insts)
        work.apply(pick.inst, pick.new_p, pick.new_s)
    assert checked > 30
