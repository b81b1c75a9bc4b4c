"""The balancer (`reactors.balance.plan`), side by side with Ganeti's hbal on
generated clusters, and `corral balance --apply` carried out on a simulated
cluster.

(a) Generated clusters of 8, 16 and 24 heterogeneous nodes, instances placed
unevenly but N+1-safely, exclusion tags, a drained node in some, empty nodes
added: each is written as an htools text file; `hbal -t FILE -S OUT` balances
it, our planner plans on the same cluster; both final placements are scored by
htools itself (`hinfo -t`), and the default plan (`lookahead=3`) must score no
worse, with no N+1 failure and no more moves than hbal's; the greedy plan alone
(`lookahead=0`) is held to the same, its known gaps marked. The lookahead step
(`pick_ahead`) is held to a fresh search of every pair it weighs; the pairs
step (`pick_pair`) to the move it counts on next still being open.

(b) On a simulated cluster (real etcd, simulated hosts over SSH, the engine),
instances are pinned unevenly, nodes are added empty, and `corral balance --apply`
must end with exactly the placement the plan predicted, on the hosts themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from events.ids import InstanceName, NodeName
from events.model import JobKind, NodeDeclared, PolicySet
from events.specs import ClusterPolicy, DiskSpec, InstanceSpec
from reactors.balance.apply import job_steps
from reactors.balance.plan import (
    DEFAULT_LOOKAHEAD,
    QUICK_FROM,
    MoveKind,
    SearchLimits,
    consider,
    plan_balance,
    run_search,
    searches,
    trim_run,
    which_searches,
)
from reactors.balance.rounds import rounds
from reactors.balance.rules import check_plan_move, valid_sequence
from reactors.balance.step.lookahead import LOOKAHEAD_TOLERANCE, pick_ahead, pick_pair
from reactors.balance.step.search import Candidate, Search
from reactors.balance.work import Work
from reactors.htools.model import (
    EXCLUSION_TAG_PREFIX,
    BCluster,
    BGroup,
    BInstance,
    BNode,
    BPolicy,
    from_state,
    group_uuid,
)
from reactors.htools.score import n1_failures, score
from reactors.htools.text import parse, render
from simulators.lab import HostConfig
from tests.support.cluster.cluster_harness import Cluster, cluster, eid
from tests.support.htools.htools_tools import HTOOLS_BIN, PACKAGE, hinfo_score, run_hbal
from tests.support.states.generated import generated_cluster, with_placement
from tests.support.tools import require_tool

TOLERANCE = 1e-6

# --------------------------------------------------------------------------- generator


# --------------------------------------------------------------------------- htools


# --------------------------------------------------------------------------- (a)


# Known gaps, kept strict (they fail the run if they start passing). With
# hbal's own rules (a new primary never joins one sharing an exclusion tag; the
# host's CPUs count in the vCPU ratio) both tools' plain searches are the same
# greedy search on the same score; where near-equal moves are ordered
# differently the trajectories part, and each ends in a local optimum the other
# cannot improve with one move. The default plan (`searches="auto"`) keeps the
# lowest of that and the other searches' plans taking no more moves. Figures
# in docs/balance.md.
_HIGHER_SCORE = pytest.mark.xfail(
    strict=True, reason="known gap vs hbal: a higher final score (105.169 vs 105.090)"
)
_MORE_MOVES = pytest.mark.xfail(strict=True, reason="known gap vs hbal: a few moves more")
_SLOW = pytest.mark.slow  # 24 nodes: tens of seconds each here, so `make bench` runs them
# (seed, full nodes, empty nodes, instances, drained)
CASES = [
    pytest.param(1, 7, 1, 70, False, id="8-nodes"),
    pytest.param(2, 6, 2, 60, True, id="8-nodes-drained"),
    pytest.param(3, 13, 3, 200, False, id="16-nodes"),
    # 118 moves against hbal's 115 (a lower score: 94.663 vs 95.265)
    # (a strict expected failure of 24 s: run by `make bench`)
    pytest.param(4, 12, 4, 180, True, id="16-nodes-drained", marks=[_MORE_MOVES, _SLOW]),
    # 3,600 instances times nodes: the quick set of searches ("auto"); the full
    # set's plan took 92 moves against hbal's 91 (a lower score: 8.5814 vs 8.6015)
    pytest.param(7, 20, 4, 150, False, id="24-nodes", marks=_SLOW),
    pytest.param(6, 20, 4, 300, True, id="24-nodes-drained", marks=_SLOW),
]
# The same clusters for the plain greedy search alone (`--lookahead 0`).
PLAIN_CASES = [
    pytest.param(1, 7, 1, 70, False, id="8-nodes"),
    pytest.param(2, 6, 2, 60, True, id="8-nodes-drained"),
    pytest.param(3, 13, 3, 200, False, id="16-nodes", marks=_HIGHER_SCORE),
    # (a strict expected failure of 24 s: run by `make bench`)
    pytest.param(4, 12, 4, 180, True, id="16-nodes-drained", marks=[_MORE_MOVES, _SLOW]),
    # no longer more moves than hbal since the greedy step is hbal's own (the
    # best move, ties to the first hbal meets)
    pytest.param(7, 20, 4, 150, False, id="24-nodes", marks=_SLOW),
    pytest.param(6, 20, 4, 300, True, id="24-nodes-drained", marks=_SLOW),
]


# hbal's result per case (its move count and the score htools gives its
# placement), run once for the tests that compare with it.
_HBAL_RUNS: dict[tuple[int, int, int, int, bool], tuple[int, float]] = {}


def _hbal_case(
    tmp: Path, start: BCluster, case: tuple[int, int, int, int, bool]
) -> tuple[int, float]:
    hit = _HBAL_RUNS.get(case)
    if hit is not None:
        return hit
    require_tool(f"{HTOOLS_BIN}/hbal", PACKAGE)
    src = tmp / "start.data"
    src.write_text(render(start))
    theirs = run_hbal(path=src)
    assert abs(theirs.initial - score(start).total) <= TOLERANCE
    assert theirs.balanced is not None
    # hbal -S saves stale free memory ("missing ram" to hinfo): score hbal's
    # placement on the starting cluster instead, which must match what it printed.
    their_path = tmp / "theirs.data"
    their_path.write_text(render(with_placement(start, theirs.balanced)))
    their_score, _ = hinfo_score(path=their_path)
    assert abs(their_score - theirs.final) <= 1e-6
    _HBAL_RUNS[case] = (theirs.moves, their_score)
    return theirs.moves, their_score


def _check_against_hbal(
    tmp: Path, case: tuple[int, int, int, int, bool], *, lookahead: int, moves_too: bool
) -> None:
    seed, full, empty, count, drained = case
    start = generated_cluster(seed=seed, full=full, empty=empty, instances=count, drained=drained)
    assert not n1_failures(start)
    their_moves, their_score = _hbal_case(tmp, start, case)
    plan = plan_balance(cluster=start, lookahead=lookahead)
    assert abs(plan.score_before - score(start).total) <= TOLERANCE

    ours_path = tmp / "ours.data"
    ours_path.write_text(render(plan.cluster_after))
    ours_score, ours_bad = hinfo_score(path=ours_path)
    detail = (
        f"seed {seed}: ours {ours_score:.6f} in {plan.moves_as_hbal} hbal moves, "
        f"hbal {their_score:.6f} in {their_moves} moves"
    )
    assert abs(ours_score - plan.score_after) <= TOLERANCE, detail
    assert ours_score <= their_score + TOLERANCE, detail
    if moves_too:
        # counted as hbal counts: a relocation of both copies is two of its moves
        assert plan.moves_as_hbal <= their_moves, detail
    assert ours_bad == 0 and not plan.n1_failures_after, detail
    _assert_rules(start, plan.cluster_after)
    # Drained nodes are emptied of primaries when anything can take them.
    for node in start.nodes:
        if node.drained:
            assert not any(i.pnode == node.name for i in plan.cluster_after.instances), detail


@pytest.mark.parametrize(("seed", "full", "empty", "count", "drained"), CASES)
def test_plan_scores_no_worse_than_hbal(
    tmp_path: Path, seed: int, full: int, empty: int, count: int, drained: bool
) -> None:
    """The default plan (`corral balance` without --lookahead): no higher score
    than hbal's, as htools scores it, within every rule, and no more moves
    (see docs/balance.md for 16-nodes-drained)."""
    case = (seed, full, empty, count, drained)
    _check_against_hbal(tmp_path, case, lookahead=DEFAULT_LOOKAHEAD, moves_too=True)


@pytest.mark.parametrize(("seed", "full", "empty", "count", "drained"), PLAIN_CASES)
def test_plain_search_scores_no_worse_than_hbal(
    tmp_path: Path, seed: int, full: int, empty: int, count: int, drained: bool
) -> None:
    """The greedy plan alone (`--lookahead 0`), held to the same, with its known
    gaps marked."""
    case = (seed, full, empty, count, drained)
    _check_against_hbal(tmp_path, case, lookahead=0, moves_too=True)


def _assert_rules(start: BCluster, after: BCluster) -> None:
    """The final placement keeps corral's rules on every node."""
    moved = {
        i.name
        for i, j in zip(start.instances, after.instances, strict=True)
        if (i.pnode, i.snode) != (j.pnode, j.snode)
    }
    old_p = {i.name: i.pnode for i in start.instances}
    for node in after.nodes:
        pri = [i for i in after.instances if i.pnode == node.name]
        sec = [i for i in after.instances if i.snode == node.name]
        if node.htools_offline:
            assert not any(i.name in moved for i in pri + sec if i.pnode == node.name), node.name
            continue
        free = node.t_mem - node.n_mem - sum(i.mem for i in pri)
        assert free >= 0, node.name
        assert node.f_dsk >= 0, node.name
        arrived = [i for i in pri if i.name in moved and old_p[i.name] != node.name]
        if arrived:
            vcpus = node.os_cpus + sum(i.vcpus for i in pri if not i.offline)
            assert vcpus <= node.t_cpu * start.vcpu_ratio, node.name
        # no primary moved in beside one sharing an exclusion tag
        prefixes = tuple(
            t[len(EXCLUSION_TAG_PREFIX) :]
            for t in start.cluster_tags
            if t.startswith(EXCLUSION_TAG_PREFIX)
        )
        for i in arrived:
            if start.node(old_p[i.name]).htools_offline:
                continue
            mine = {t for t in i.tags if prefixes and t.startswith(prefixes)}
            others = {t for j in pri if j.name != i.name for t in j.tags}
            assert not (mine & others), (node.name, i.name)
        per_peer: dict[str, int] = {}
        for i in sec:
            per_peer[i.pnode] = per_peer.get(i.pnode, 0) + i.mem
        assert max(per_peer.values(), default=0) <= free, node.name
    for inst in after.instances:
        assert inst.pnode != inst.snode


def test_lookahead_keeps_the_plan_prefer_asks_for_within_the_rules() -> None:
    """On 16-nodes-drained the lookahead plan ends lower than the greedy one in as
    many moves, and the default (`prefer="budget"`) keeps it; part of it
    already reaches the greedy score in fewer, and `prefer="moves"` keeps that
    part; the pairs plan ends lowest, in more moves, and `prefer="score"` keeps
    it. The frugal plan, which takes the least data among gains within 0.5 % of
    the best, copies less than the greedy one. The plans not kept are reported
    with their figures, and the one kept is the best of them by the rule asked
    for. With "moves" each other search stops at the greedy score: its plans
    are the others' plans cut there, found with fewer candidates scored."""
    start = generated_cluster(seed=4, full=12, empty=4, instances=180, drained=True)
    plain = plan_balance(cluster=start, lookahead=0)
    budget = plan_balance(cluster=start)
    short = plan_balance(cluster=start, prefer="moves")
    low = plan_balance(cluster=start, prefer="score")
    every = {
        "greedy",
        "lookahead 3",
        "lookahead 3, cut at the greedy score",
        "pairs 3",
        "pairs 3, cut at the greedy score",
        "greedy, less data",
        "greedy, less data, cut at the greedy score",
        "frugal",
    }
    assert plain.search == "greedy" and not plain.dropped
    assert budget.search == "lookahead 3"
    assert short.search == "lookahead 3, cut at the greedy score"
    assert low.search == "pairs 3"
    assert budget.moves_as_hbal <= plain.moves_as_hbal
    assert budget.score_after < short.score_after
    assert low.score_after < budget.score_after
    assert short.score_after <= plain.score_after + TOLERANCE
    assert short.moves_as_hbal < plain.moves_as_hbal
    assert low.score_after < short.score_after
    assert low.moves_as_hbal > short.moves_as_hbal
    # each reports the others, the greedy one with the plain plan's figures
    stopped = {"greedy", "lookahead 3, cut at the greedy score"}
    stopped |= {"pairs 3, cut at the greedy score", "frugal"}
    stopped |= {"greedy, less data, cut at the greedy score"}
    for plan, plans in ((budget, every), (short, stopped), (low, every)):
        assert {d.search for d in plan.dropped} | {plan.search} == plans
        assert len(plan.dropped) == len(plans) - 1
        assert plain.summary() in plan.dropped
    assert short.summary() in low.dropped and low.summary() in budget.dropped
    assert set(short.dropped) <= set(low.dropped)
    assert (budget.prefer, short.prefer, low.prefer) == ("budget", "moves", "score")
    assert short.candidates_scored < low.candidates_scored == budget.candidates_scored
    frugal = next(d for d in budget.dropped if d.search == "frugal")
    assert frugal.data_mib < plain.data_mib
    # kept by the rule: lowest of those in no more moves than the greedy plan;
    # fewest moves of those no higher than the greedy plan; lowest
    for d in budget.dropped:
        if d.moves_as_hbal <= plain.moves_as_hbal:
            assert d.score_after >= budget.score_after, d
    for d in short.dropped:
        if d.score_after <= plain.score_after + TOLERANCE:
            assert d.moves_as_hbal >= short.moves_as_hbal, d
    assert all(d.score_after >= low.score_after for d in low.dropped)
    for plan in (budget, short, low):
        assert plan.score_after < plan.score_before
        assert not plan.n1_failures_after
        _assert_rules(start, plan.cluster_after)
        # The plan's recorded end is what the cluster scores after its moves.
        assert abs(score(plan.cluster_after).total - plan.score_after) <= TOLERANCE
    with pytest.raises(ValueError, match="lookahead"):
        plan_balance(cluster=start, lookahead=-1)
    with pytest.raises(ValueError, match="prefer"):
        plan_balance(cluster=start, lookahead=3, prefer="speed")


def test_pick_ahead_puts_back_what_it_does_not_pick_and_takes_the_best_pair() -> None:
    start = generated_cluster(seed=9, full=6, empty=2, instances=60)
    work = Work(start, frozenset())
    search = Search(work)
    history: list[tuple[int, int, int]] = []

    def pair_end(c: Candidate) -> float:
        """The score after the moves so far, `c` and the best move after it,
        by a fresh search on a fresh working model."""
        w = Work(start, frozenset())
        for mv in [*history, (c.inst, c.new_p, c.new_s)]:
            w.apply(*mv)
        after = Search(w).best(tolerance=0.0)
        if after:
            w.apply(after[0].inst, after[0].new_p, after[0].new_s)
        return w.total()

    def fresh_cands(top: int) -> list[Candidate]:
        """The candidates after the moves so far, by a fresh search."""
        w = Work(start, frozenset())
        for mv in history:
            w.apply(*mv)
        return Search(w).best(tolerance=LOOKAHEAD_TOLERANCE, top=top)

    differed = reused = left = 0
    cands = search.best(tolerance=LOOKAHEAD_TOLERANCE)
    for _ in range(12):
        before = (list(work.p), list(work.s), list(work.f_mem), list(work.f_dsk), work.total())
        picked = pick_ahead(search=search, cands=cands, width=3)
        pick = picked.pick
        if picked.applied:  # the pick's trial, left in place: nothing else
            assert (work.p[pick.inst], work.s[pick.inst]) == (pick.new_p, pick.new_s)
            work.apply(pick.inst, before[0][pick.inst], before[1][pick.inst])
            left += 1
        now = (list(work.p), list(work.s), list(work.f_mem), list(work.f_dsk), work.total())
        assert now == before
        tried: dict[tuple[int, int, int], Candidate] = {}
        for c in cands:
            tried.setdefault((c.inst, c.new_p, c.new_s), c)
        first_three = list(tried.values())[:3]
        assert pair_end(pick) <= min(pair_end(c) for c in first_three) + TOLERANCE
        differed += pick is not first_three[0]
        work.apply(pick.inst, pick.new_p, pick.new_s)
        history.append((pick.inst, pick.new_p, pick.new_s))
        # the pick's trial found the next step's candidates: those a fresh search
        # finds up to its third distinct move, which begin the whole list
        if picked.after is None:
            cands = search.best(tolerance=LOOKAHEAD_TOLERANCE)
            fresh = fresh_cands(0)
        else:
            cands = picked.after
            reused += 1
            fresh = fresh_cands(3)
            assert fresh == fresh_cands(0)[: len(fresh)]
        assert [(c.inst, c.new_p, c.new_s, c.kind) for c in cands] == [
            (c.inst, c.new_p, c.new_s, c.kind) for c in fresh
        ]
        assert all(abs(a.delta - b.delta) <= 1e-9 for a, b in zip(cands, fresh, strict=True))
    # the lookahead changed the greedy choice at some of these steps, and the
    # trials' candidates were used as the next step's
    assert differed >= 2 and reused >= 6 and left >= 2


def test_pick_pair_keeps_the_next_best_move_open() -> None:
    """`pick_pair` only reads the model; it picks among the three best moves,
    sometimes not the best one, and the move it counts on next (the best one
    sharing none of its nodes) is still open after the pick, with about the gain
    it was counted at."""
    start = generated_cluster(seed=4, full=12, empty=4, instances=180)
    work = Work(start, frozenset())
    search = Search(work)
    differed = partners = 0
    for _ in range(20):
        cands = search.best(tolerance=LOOKAHEAD_TOLERANCE)
        assert cands
        before = (list(work.p), list(work.s), list(work.f_mem), list(work.f_dsk), work.total())
        pick = pick_pair(work=work, cands=cands, width=3)
        assert (list(work.p), list(work.s), list(work.f_mem), list(work.f_dsk), work.total()) == (
            before
        )
        distinct = list({(c.inst, c.new_p, c.new_s): c for c in reversed(cands)}.values())
        distinct.sort(key=cands.index)
        assert pick in distinct[:3]
        differed += pick is not cands[0]

        def nodes(c: Candidate) -> set[int]:
            return {work.p[c.inst], work.s[c.inst], c.new_p, c.new_s}

        partner = next(
            (c for c in cands if c.inst != pick.inst and not nodes(c) & nodes(pick)), None
        )
        total = work.total()
        work.apply(pick.inst, pick.new_p, pick.new_s)
        assert work.total() == pytest.approx(total + pick.delta, abs=1e-9)
        if partner is not None:
            partners += 1
            open_now = {(c.inst, c.new_p, c.new_s): c for c in search.best(tolerance=1.0)}
            again = open_now[(partner.inst, partner.new_p, partner.new_s)]
            assert again.delta == pytest.approx(partner.delta, rel=0.1)
    assert differed >= 2 and partners >= 10


def _known_after(*, calls: int, score: float) -> Callable[[], float | None]:
    """A `reach` that gives `score` from its `calls`-th call on, None before."""
    asked = 0

    def reach() -> float | None:
        nonlocal asked
        asked += 1
        return score if asked >= calls else None

    return reach


def test_a_search_stopped_at_the_greedy_score_is_the_whole_one_trimmed() -> None:
    """Keeping by "moves", each search but the greedy one stops at its first
    move reaching the greedy plan's score (`run_search`'s `reach`), whenever
    that score becomes known (in a worker it comes from another process, at
    any point of the search): trimming the whole search there (`trim_run`)
    gives the same run, with the candidates scored up to that move."""
    start = generated_cluster(seed=4, full=12, empty=4, instances=180, drained=True)
    limits = SearchLimits()
    specs = searches(lookahead=3, which="full")
    greedy = run_search(cluster=start, avoid=frozenset(), spec=specs[0], limits=limits)
    target = consider(cluster=start, avoid=frozenset(), run=greedy, greedy_score=None)
    known = target[0].figures.score_after
    reached = 0
    for spec in specs[1:]:
        whole = run_search(cluster=start, avoid=frozenset(), spec=spec, limits=limits)
        stopped = run_search(
            cluster=start, avoid=frozenset(), spec=spec, limits=limits, reach=lambda: known
        )
        # the score arrives one move after the one reaching it
        late = _known_after(calls=len(stopped.moves) + 1, score=known)
        after = run_search(cluster=start, avoid=frozenset(), spec=spec, limits=limits, reach=late)
        if min(whole.totals) > known + 1e-9:  # (the frugal search here never gets there)
            assert trim_run(whole, known) == stopped == after == whole
            continue
        reached += 1
        assert len(stopped.moves) < len(after.moves) <= len(whole.moves), spec
        assert trim_run(whole, known) == stopped == trim_run(after, known)
        assert stopped.totals[-1] <= known + 1e-9 < min(stopped.totals[:-1])
        assert stopped.scored < whole.scored
        assert stopped.stopped_by.startswith("reached the greedy plan's score")
    assert reached == 3  # the lookahead, the pairs and the less-data greedy searches
    with pytest.raises(ValueError, match="greedy run"):
        trim_run(greedy, known)


def test_auto_plans_small_clusters_with_every_search_and_large_ones_quickly() -> None:
    """`searches="auto"` (the default) runs the full set (greedy, lookahead,
    pairs, greedy with less data, frugal) below `QUICK_FROM` instances times
    nodes and the quick set (greedy, greedy with less data, frugal) from there
    on, to the same plan as asking for that set,
    keeping the full set's plan by "budget" and the quick set's by "moves"
    (`prefer="auto"`); either set's plan keeps every rule; `lookahead` 0 is the greedy search
    alone, and cannot go with a set that has more; a set that does not exist
    is refused."""
    small = generated_cluster(seed=3, full=13, empty=3, instances=200)
    large = generated_cluster(seed=5, full=13, empty=3, instances=240)
    assert len(small.instances) * len(small.nodes) < QUICK_FROM
    assert len(large.instances) * len(large.nodes) >= QUICK_FROM
    assert which_searches(asked="auto", lookahead=3, cluster=small) == "full"
    assert which_searches(asked="auto", lookahead=3, cluster=large) == "quick"
    assert which_searches(asked="auto", lookahead=0, cluster=large) == "greedy"
    assert which_searches(asked="full", lookahead=3, cluster=large) == "full"
    quick = plan_balance(cluster=large)
    assert quick.searches == "quick"
    assert quick == plan_balance(cluster=large, search_set="quick")
    names = {quick.search} | {d.search for d in quick.dropped}
    assert names <= {
        "greedy",
        "frugal",
        "frugal, cut at the greedy score",
        "greedy, less data",
        "greedy, less data, cut at the greedy score",
    }
    assert "greedy" in names
    assert any(n.startswith("frugal") for n in names)
    assert any(n.startswith("greedy, less data") for n in names)
    full = plan_balance(cluster=large, search_set="full")
    assert full.searches == "full"
    full_names = {full.search} | {d.search for d in full.dropped}
    assert {"greedy", "lookahead 3", "pairs 3", "greedy, less data", "frugal"} <= full_names
    # the default keeps the quick set's plan by "moves" (the frugal search
    # stopping at the greedy score, the same plan as the whole one cut there)
    # and the full set's by "budget"
    assert (quick.prefer, full.prefer) == ("moves", "budget")
    whole = plan_balance(cluster=large, search_set="quick", prefer="budget")
    wholes = {d.search: d for d in whole.dropped} | {whole.search: whole.summary()}
    cut = ", cut at the greedy score"
    for d in (*quick.dropped, quick.summary()):
        if d.search in wholes:
            assert wholes[d.search] == d
        else:  # it reached the greedy score at its last move: whole and cut are one
            assert d.search.endswith(cut)
            assert wholes[d.search.removesuffix(cut)] == replace(d, search=d.search[: -len(cut)])
        if d.score_after <= wholes["greedy"].score_after + TOLERANCE:
            assert d.moves_as_hbal >= quick.moves_as_hbal
    # the greedy and frugal plans are the same in either set
    same = {d.search: d for d in full.dropped} | {full.search: full.summary()}
    for d in (*whole.dropped, whole.summary()):
        assert same[d.search] == d
    for plan in (quick, full):
        assert plan.score_after < plan.score_before
        assert plan.moves_as_hbal <= same["greedy"].moves_as_hbal
        assert not plan.n1_failures_after
        _assert_rules(large, plan.cluster_after)
    assert plan_balance(cluster=small).searches == "full"
    greedy = plan_balance(cluster=large, lookahead=0)
    assert greedy.searches == "greedy" and not greedy.dropped
    with pytest.raises(ValueError, match="greedy search alone"):
        plan_balance(cluster=large, lookahead=0, search_set="full")
    with pytest.raises(ValueError, match="searches must be one of"):
        plan_balance(cluster=large, search_set="fast")


def test_balance_cli_plans_an_htools_file_with_lookahead(tmp_path: Path) -> None:
    """Offline, as `hbal -t`: the default on this small cluster is the full
    set of searches (`--searches auto`), which plans the greedy, lookahead,
    pairs, less-data greedy and frugal plans and says which it kept and why;
    `--searches quick` plans the greedy and the two less-data ones;
    `--lookahead 0` plans the greedy one alone; bad values and a clash of the
    two are refused, writing nothing."""
    start = generated_cluster(seed=9, full=6, empty=2, instances=60)
    src = tmp_path / "c.data"
    src.write_text(render(start))
    out = tmp_path / "balanced.data"
    corral = [
        sys.executable,
        "-m",
        "orchestrator.cli.main",
        "balance",
        "--plan",
        "--htools",
        str(src),
    ]
    done = subprocess.run(
        [*corral, "--json", "--write-htools", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    plain = plan_balance(cluster=start, lookahead=0)
    assert doc["score_after"] <= plain.score_after + TOLERANCE
    # which search's plan was kept, and it is that search's result
    name = doc["search"]
    whole = ("greedy", "lookahead 3", "pairs 3", "greedy, less data", "frugal")
    assert name in whole or name.endswith(", cut at the greedy score")
    kept = plain if doc["search"] == "greedy" else plan_balance(cluster=start, lookahead=3)
    assert kept.search == doc["search"]
    alone = subprocess.run(
        [*corral, "--lookahead", "0", "--json"], capture_output=True, text=True, timeout=120
    )
    assert alone.returncode == 0, alone.stderr
    greedy_only = json.loads(alone.stdout)
    assert greedy_only["search"] == "greedy" and greedy_only["dropped"] == []
    assert [m["instance"] for m in greedy_only["moves"]] == [m.instance for m in plain.moves]
    assert [m["instance"] for m in doc["moves"]] == [m.instance for m in kept.moves]
    # the plans not kept are reported with their figures; the greedy one is plain's
    plans = {d["search"]: d for d in [doc, *doc["dropped"]]}
    assert {"greedy", "lookahead 3", "pairs 3", "greedy, less data", "frugal"} <= set(plans)
    assert len(plans) == 1 + len(doc["dropped"])
    assert doc["moves_as_hbal"] <= plans["greedy"]["moves_as_hbal"]
    for other in doc["dropped"]:
        # kept: the lowest of those taking no more moves than the greedy plan
        if other["moves_as_hbal"] <= plans["greedy"]["moves_as_hbal"]:
            assert doc["score_after"] <= other["score_after"]
    figures = ("score_after", "moves_as_hbal", "data_moved_mib", "migrations")
    greedy = plans["greedy"]
    assert [greedy[k] for k in figures] == [
        round(plain.score_after, 8),
        plain.moves_as_hbal,
        plain.data_mib,
        plain.migrations,
    ]
    assert not doc["n1_failures_after"]
    written = parse(out.read_text())
    assert abs(score(with_placement(start, written)).total - doc["score_after"]) <= 1e-6
    text = subprocess.run(corral, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert f"kept: {doc['search']} (it ends lowest in no more moves" in text.stdout
    for other in doc["dropped"]:
        assert (
            f"also planned, {other['search']}: score {other['score_after']:.8f} "
            f"in {other['moves']} moves"
        ) in text.stdout
    low = subprocess.run(
        [*corral, "--prefer", "score", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert low.returncode == 0, low.stderr
    lowest = json.loads(low.stdout)
    assert all(lowest["score_after"] <= d["score_after"] for d in lowest["dropped"])
    assert lowest["prefer"] == "score"
    bogus = subprocess.run([*corral, "--prefer", "speed"], capture_output=True, text=True)
    assert bogus.returncode == 2 and "--prefer" in bogus.stderr
    bad = subprocess.run([*corral, "--lookahead", "-1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "--lookahead" in bad.stderr
    assert "Traceback" not in bad.stderr
    # the set of searches: "auto" is the full set at this size, kept by
    # "budget"; quick on asking, kept by "moves" unless told otherwise
    assert doc["searches"] == "full" and doc["prefer"] == "budget"
    quick = subprocess.run(
        [*corral, "--searches", "quick", "--json"], capture_output=True, text=True, timeout=120
    )
    assert quick.returncode == 0, quick.stderr
    quick_doc = json.loads(quick.stdout)
    quick_plan = plan_balance(cluster=start, search_set="quick")
    assert quick_doc["searches"] == "quick" and quick_doc["search"] == quick_plan.search
    assert quick_doc["prefer"] == quick_plan.prefer == "moves"
    assert [m["instance"] for m in quick_doc["moves"]] == [m.instance for m in quick_plan.moves]
    assert {d["search"] for d in quick_doc["dropped"]} <= {
        "greedy",
        "frugal",
        "frugal, cut at the greedy score",
        "greedy, less data",
        "greedy, less data, cut at the greedy score",
    }
    out.unlink()
    clash = subprocess.run(
        [*corral, "--lookahead", "0", "--searches", "full", "--write-htools", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert clash.returncode == 1 and "--searches full" in clash.stderr
    assert "Traceback" not in clash.stderr and not out.exists()
    unknown = subprocess.run([*corral, "--searches", "fast"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "--searches" in unknown.stderr


def test_plan_is_pure_and_respects_max_moves_and_avoid() -> None:
    start = generated_cluster(seed=9, full=6, empty=2, instances=60)
    full_plan = plan_balance(cluster=start, lookahead=0)
    assert len(full_plan.moves) > 3
    short = plan_balance(cluster=start, max_moves=3)
    assert len(short.moves) <= 3
    assert short.score_after >= full_plan.score_after - TOLERANCE
    avoid = frozenset({"node08"})
    for careful in (plan_balance(cluster=start, avoid=avoid, lookahead=k) for k in (0, 3)):
        assert all("node08" not in (m.new_primary, m.new_secondary) for m in careful.moves)
    # Each move's recorded score is the full score of the cluster after it.
    replay = start
    for move in full_plan.moves[:5]:
        replay = replace(
            replay,
            instances=tuple(
                replace(i, pnode=move.new_primary, snode=move.new_secondary)
                if i.name == move.instance
                else i
                for i in replay.instances
            ),
        )
    assert {m.kind for m in full_plan.moves} <= set(MoveKind)
    # A cluster the greedy search balanced plans nothing more with it. (A plan
    # cut at the greedy score can leave moves: docs/balance.md.)
    again = plan_balance(cluster=full_plan.cluster_after, lookahead=0)
    assert len(again.moves) <= 1
    # Rounds never put two moves touching one node side by side.
    for batch in rounds(full_plan.moves):
        seen: set[str] = set()
        for move in batch:
            assert not (move.nodes & seen)
            seen |= move.nodes
    for move in full_plan.moves:
        steps = job_steps(move)
        assert steps and all(kind for kind, _ in steps)


def test_two_moves_taking_both_copies_to_new_nodes_fold_into_one_relocation() -> None:
    start = generated_cluster(
        seed=13, full=13, empty=3, instances=520, memory=(512, 1024, 1024, 2048, 4096)
    )
    unfolded = plan_balance(cluster=start, fold_repeats=False, lookahead=0)
    plan = plan_balance(cluster=start, lookahead=0)
    # the same end, with fewer moves and live migrations and the same data
    assert plan.placements() == unfolded.placements()
    assert abs(plan.score_after - unfolded.score_after) <= TOLERANCE
    relocations = [m for m in plan.moves if m.kind is MoveKind.RELOCATE]
    assert relocations
    assert len(plan.moves) < len(unfolded.moves)
    assert plan.moves_as_hbal == len(plan.moves) + len(relocations)
    assert plan.migrations <= unfolded.migrations
    assert plan.data_mib <= unfolded.data_mib
    dsk = {i.name: i.dsk for i in start.instances}
    for m in relocations:
        assert not {m.new_primary, m.new_secondary} & {m.old_primary, m.old_secondary}
        assert m.data_mib == 2 * dsk[m.instance] and m.migrations == 1
        assert job_steps(m) == (
            (JobKind.INSTANCE_REPLACE_DISKS, {"mode": "change-secondary", "node": m.new_primary}),
            (JobKind.INSTANCE_MIGRATE, {}),
            (JobKind.INSTANCE_REPLACE_DISKS, {"mode": "change-secondary", "node": m.new_secondary}),
        )
    # every move, relocations included, keeps the rules step by step
    names = [n.name for n in start.nodes]
    index = {i.name: k for k, i in enumerate(start.instances)}
    seq = [
        (index[m.instance], names.index(m.new_primary), names.index(m.new_secondary))
        for m in plan.moves
    ]
    assert valid_sequence(cluster=start, avoid=frozenset(), moves=seq)
    _assert_rules(start, plan.cluster_after)


def test_a_relocation_is_refused_where_one_of_its_steps_breaks_a_rule() -> None:
    # vm1 on node1/node2; node3 is the only other node: no pair of two new
    # nodes exists, and a pair with the same node twice is never a move
    inst = BInstance(name="vm1", mem=1024, dsk=10240, vcpus=1, pnode="node1", snode="node2")
    work = Work(_small(instances=[inst]), frozenset())
    assert check_plan_move(work, 0, 2, 2) is None
    assert check_plan_move(work, 0, 2, 0) is MoveKind.REPLACE_AND_FAILOVER
    # four nodes, the third without the disk space the copy needs first
    small = _small(instances=[inst])
    extra = replace(small.nodes[2], name="node4")
    full = replace(small.nodes[2], f_dsk=1024)
    cluster = replace(small, nodes=(*small.nodes[:2], full, extra))
    work = Work(cluster, frozenset())
    assert check_plan_move(work, 0, 2, 3) is None  # node3 cannot take the copy
    roomy = replace(cluster, nodes=(*small.nodes[:2], small.nodes[2], extra))
    work = Work(roomy, frozenset())
    assert check_plan_move(work, 0, 2, 3) is MoveKind.RELOCATE
    assert (work.p[0], work.s[0]) == (0, 1)  # the check changed nothing


def _small(*, instances: list[BInstance], cpus: int = 32) -> BCluster:
    """Three 64 GiB nodes: node1 holds every primary, node2 every second copy,
    node3 is empty; exclusion tags are those starting with "svc"."""
    used = {"node1": sum(i.mem for i in instances)}
    nodes = tuple(
        BNode(
            name=name,
            t_mem=65536,
            n_mem=1024,
            f_mem=65536 - 1024 - used.get(name, 0),
            t_dsk=2_000_000,
            f_dsk=2_000_000 - sum(i.dsk for i in instances if name in (i.pnode, i.snode)),
            t_cpu=cpus,
        )
        for name in ("node1", "node2", "node3")
    )
    return BCluster(
        nodes=nodes, instances=tuple(instances), cluster_tags=(f"{EXCLUSION_TAG_PREFIX}svc",)
    )


def test_no_move_puts_a_primary_beside_one_sharing_an_exclusion_tag() -> None:
    """Anti-affinity: hbal and hail refuse a primary on a node whose primaries
    share one of its exclusion tags (FailTags); so does the balancer, even where
    the move would lower the score by moving a conflict from one node to another."""
    web = [
        BInstance(
            name=f"web{k}",
            mem=1024,
            dsk=10240,
            vcpus=1,
            pnode="node1",
            snode="node2",
            tags=("svc:web",),
        )
        for k in range(6)
    ]
    start = _small(instances=web)
    plan = plan_balance(cluster=start)
    assert plan.moves, "moving primaries off node1 lowers the score"
    after = {i.name: i for i in plan.cluster_after.instances}
    moved_in = {name for name, i in after.items() if i.pnode != "node1"}
    for node in ("node2", "node3"):
        assert sum(1 for name in moved_in if after[name].pnode == node) <= 1, plan.moves


def test_the_vcpu_ratio_counts_the_hosts_own_cpus() -> None:
    """Ganeti's vCPU ratio counts the node's own CPUs (cpu_n) as used: with 4
    CPUs, a ratio of 1 and one CPU for the host, a node takes 3 vCPUs of primaries.
    The ratio is the node group's (htools apply the cluster's policy line to no
    node; a group without its own line has the default ratio, 4)."""
    vms = [
        BInstance(name=f"vm{k}", mem=512, dsk=1024, vcpus=1, pnode="node1", snode="node2")
        for k in range(12)
    ]
    one = BPolicy(vcpu_ratio=1.0)
    start = replace(
        _small(instances=vms, cpus=4),
        policy=one,
        groups=(BGroup(name="default", uuid=group_uuid(name="default"), policy=one),),
    )
    plan = plan_balance(cluster=start)
    after = plan.cluster_after
    for node in after.nodes:
        if node.name != "node1":  # node1 starts over the ratio; it only gives
            taken = sum(i.vcpus for i in after.instances if i.pnode == node.name)
            assert node.os_cpus + taken <= node.t_cpu * 1.0, (node.name, plan.moves)
    assert any(i.pnode == "node3" for i in after.instances)


# --------------------------------------------------------------------------- (b)


async def _balance(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `corral balance ARGS` process against the cluster's etcd."""
    return await c.corral("balance", *args)


async def test_balance_apply_on_a_simulated_cluster(tmp_path: Path) -> None:
    hosts = [HostConfig(name=f"node{i}") for i in range(1, 6)]
    async with cluster(tmp_path, hosts=hosts) as c:
        specs = c.node_specs()
        first = [s for s in specs if s.name in ("node1", "node2", "node3")]
        late = [s for s in specs if s.name in ("node4", "node5")]
        policy = ClusterPolicy(exclusion_tag_prefixes=("svc:",))
        await c.declare(
            [PolicySet(id=eid(), time=time.time(), actor="test", cluster_name="lab", policy=policy)]
            + [NodeDeclared(id=eid(), time=time.time(), actor="test", spec=s) for s in first]
        )
        pins = [("node1", "node2"), ("node1", "node3"), ("node2", "node1"), ("node1", "node2")]
        instances = [
            InstanceSpec(
                name=InstanceName(f"vm{k:02d}"),
                memory_mib=512 + 256 * (k % 3),
                vcpus=1,
                disks=(DiskSpec(size_mib=(1 + k % 2) * 1024),),
                primary=NodeName(pins[k % len(pins)][0]),
                secondary=NodeName(pins[k % len(pins)][1]),
                tags=frozenset({f"svc:{'web' if k % 2 else 'db'}"}),
            )
            for k in range(8)
        ]
        await c.declare_instances(instances)
        await c.start_engine()
        names = [i.name for i in instances]
        await c.wait_for("pinned instances converged", lambda: c.converged(names), timeout=90)
        # Two empty nodes join; the pins are dropped so the instances may move.
        await c.declare(
            [NodeDeclared(id=eid(), time=time.time(), actor="test", spec=s) for s in late]
        )
        await c.declare_instances([replace(i, primary=None, secondary=None) for i in instances])
        engine = c.engine
        assert engine is not None
        await c.wait_for(
            "new nodes online",
            lambda: all(
                s.name in engine.state.observed
                and engine.state.observed[s.name].health.value == "online"
                for s in late
            ),
            timeout=30,
        )
        planned = await _balance(c, "--plan", "--json")
        assert planned.returncode == 0, planned.stderr
        doc = json.loads(planned.stdout)
        assert doc["moves"] and doc["score_after"] < doc["score_before"], doc
        # the plan takes one instance's both copies to new nodes in one move
        # (replace, migrate, replace), carried out below like the others
        assert "relocate" in {m["kind"] for m in doc["moves"]}, doc
        assert not doc["n1_failures_after"]
        predicted = {i.name: (i.pnode, i.snode) for i in from_state(state=engine.state).instances}
        for m in doc["moves"]:
            predicted[m["instance"]] = (m["new_primary"], m["new_secondary"])
        refused = await _balance(c, "--apply", "--htools", str(tmp_path / "x.data"))
        assert refused.returncode == 1 and "live cluster only" in refused.stderr
        applied = await _balance(c, "--apply")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "round 1/" in applied.stdout and "balanced:" in applied.stdout
        await c.wait_for("balanced instances converged", lambda: c.converged(names), timeout=90)
        final = {str(n): (p.primary, p.secondary) for n, p in engine.state.placements.items()}
        assert final == predicted
        for name, (p, s) in final.items():
            assert c.running_on(name) == [p], name
            holders = sorted(
                h.name
                for h in c.lab.fabric.hosts.values()
                if any(r.startswith(name) for r in h.copies)
            )
            assert holders == sorted([p, s]), (name, holders)
        assert not n1_failures(from_state(state=engine.state))
        again = await _balance(c, "--plan", "--json")
        assert len(json.loads(again.stdout)["moves"]) <= 1
        # The continuous mode looks, finds nothing worth a move, and submits no job.
        jobs = len(engine.state.jobs)
        watched = await _balance(
            c, "--watch", "--rounds", "2", "--interval", "0.2", "--threshold", "0.5"
        )
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert watched.stdout.count("nothing to do") == 2
        assert len(engine.state.jobs) == jobs
