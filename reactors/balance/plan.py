"""The balancer: a sequence of instance moves that lowers Ganeti's cluster score
(hbal's `compCV`, as `reactors.htools.score` computes it), never breaking N+1 or
any placement rule, preferring moves that copy less data.

Move kinds (the same as hbal's for DRBD instances, named after what they do):
  - failover: primary and secondary swap (one live migration, no data copied);
  - replace-secondary T: the second copy moves to T (the disk is resynced to T);
  - failover-and-replace T: failover, then the new secondary is T (the old
    primary's copy is dropped; one migration, one resync);
  - replace-and-failover T: the secondary becomes T, then failover to T (the old
    primary keeps a copy as the new secondary; one resync, one migration);
  - replace-primary T: failover, replace the secondary (the old primary) by T,
    failover to T (two migrations, one resync);
  - relocate T U: replace-and-failover T, then replace-secondary U (both copies
    to new nodes: one migration, two resyncs). The search never proposes it; the
    folding pass makes it of an instance's two moves (hbal would count two).

The search is hbal's: greedy, every step tries every instance with every move kind
and every target node and keeps the lowest resulting score; it stops when no move
gains more than `min_gain` (once the score is below `min_gain_limit`; above it any
gain goes on, as hbal's defaults do) or after `max_moves`. What makes it fast is
that no candidate is scored from scratch: a move changes two or three nodes, so its
effect on every per-node statistic is computed from those nodes alone, from running
sums of deviations kept per step (the idea of `reactors.placement.score_delta`, extended to
failovers and to moves that take a copy off a node); target-side checks and changes
are derived once per step and node, and candidates whose own side already rules
them out (memory, disk, vCPU ratio, N+1, failure domains) are never scored. Most
candidates are not scored at all: a candidate's delta has a lower bound that is the
sum of a bound for the instance's own side (its parts that do not depend on the
cluster-wide means kept from step to step while its nodes are unchanged, and
re-evaluated at each step's means) and one for the target node (`reactors.balance.step.bounds`), and
candidates are visited best bound first until no bound can come within
`cost_tolerance` of the best delta found; the result is the one of scoring every
candidate. The greedy search takes hbal's step exactly: the move of the lowest
score, and among equal ones (within `TIE`, float rounding) the first hbal meets
(`hbal_position`: instances in file order, each's failover first, then target
nodes in file order with the kinds in Ganeti's `possibleMoves` order), so that
where the rules agree it follows hbal's trajectory move for move and its plan,
the one the others are weighed against, is hbal's. Near-ties decide where
greedy trajectories part, and neither order ends lower in general; so the
quick and full sets also run "greedy, less data": among moves whose gains are
within `cost_tolerance` (relative) of the best, the one that copies the least
data, then migrates the fewest times (the greedy step before issue 29). A
final pass folds repeated moves of one instance into one where the rules allow, so
the plan ends in the same placement with fewer moves and less data copied.
With the full set of searches (`search_set="full"`, `lookahead` K >= 2, 3 by
default; 0 is the greedy search alone, as hbal's) the plan is made three times
more: each move picked among the K
best (within 5 %) by its gain plus the best gain after it (the lookahead plan),
and by its gain plus that of the best move it leaves open on other nodes (the
pairs plan; both in `reactors.balance.step.lookahead`); and greedily again, but
preferring less data among gains within `FRUGAL_TOLERANCE` (0.5 %) of the best
(the frugal plan), and the "greedy, less data" plan; the quick set makes only
the greedy, the "greedy, less data" and the frugal plans,
and the default ("auto") is the full set on clusters below `QUICK_FROM`
instances times nodes and the quick one from there on. Those plans often end
lower or copy less but run longer;
cut at their first move that reaches the greedy plan's final score, they often
get there in fewer moves. One plan is kept (`keep_plan`): "budget", the one
ending lowest in no more moves than the greedy plan; "moves", the shortest
ending no higher than the greedy plan (each other search then stops at its
first move reaching the greedy plan's score: `trim_run`); "score", the lowest;
the default, "auto", is "budget" with the full set and "moves" with the quick
one (`which_prefer`). The others' figures go with it (`BalancePlan.dropped`).

Rules every intermediate placement keeps (those of `reactors.placement.allocator`):
a node taking a primary has the memory (all its primaries, running or not, within
t_mem - n_mem) and the vCPU ratio (the host's own CPUs counted as used, as
Ganeti does); a node taking a copy has the disk; every node
that takes anything keeps N+1 (its free memory covers, for each peer, the
auto-balanced instances that peer would fail over to it); a pair never shares a
failure domain; both copies are never on one node; offline, drained and `avoid`
nodes take nothing (instances on them are moved off, which the score rewards).
A new primary never joins a primary that shares one of its exclusion tags
(anti-affinity, hbal's and hail's FailTags; moves off an offline or drained node
are exempt, as Ganeti forces those); conflicts already there are scored. The
corral jobs that carry a composite move out check their own intermediate steps;
those are checked here too (the primary of a replace keeps N+1; a
replace-primary's temporary primary has the memory and keeps anti-affinity).

The planner's parts, in the order data flows through them: the move and plan
types (`reactors.balance.moves`), the mutable working model
(`reactors.balance.work`) and its rule checks (`reactors.balance.rules`), exact
score deltas (`reactors.balance.step.deltas`), own sides and node figures kept from
step to step (`reactors.balance.step.sides`, `reactors.balance.step.arrays`), the bounds
(`reactors.balance.step.bounds`), the greedy step (`reactors.balance.step.search`), the
lookahead (`reactors.balance.step.lookahead`) and the folding pass
(`reactors.balance.fold`). This module runs the steps and builds the
plan; the public names (`plan_balance`, `BalancePlan`, `Move`, `MoveKind`,
`MoveStep`, `StepKind`, the defaults) are imported from here.

Pure: no I/O, no logging, no asyncio; it plans, it never changes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from reactors.balance.fold import fold
from reactors.balance.groups import group_views, groups_with_nodes, merge_plans
from reactors.balance.moves import (
    COPIES,
    HBAL_MOVES,
    MIGRATIONS,
    BalancePlan,
    Move,
    MoveKind,
    MoveStep,
    PlanSummary,
    StepKind,
)
from reactors.balance.rules import check_plan_move
from reactors.balance.step.exact import ExactSearch
from reactors.balance.step.lookahead import LOOKAHEAD_TOLERANCE, pick_ahead, pick_pair
from reactors.balance.step.search import TIE, Candidate, Search, choose, choose_as_hbal
from reactors.balance.work import Work, exactly_modelled
from reactors.htools.model import BCluster, BInstance, BNode
from reactors.htools.score import n1_failures, score

__all__ = [
    "DEFAULT_COST_TOLERANCE",
    "DEFAULT_LOOKAHEAD",
    "DEFAULT_MIN_GAIN",
    "DEFAULT_MIN_GAIN_LIMIT",
    "DEFAULT_PREFER",
    "DEFAULT_SEARCHES",
    "FRUGAL_TOLERANCE",
    "PREFER",
    "QUICK_FROM",
    "SEARCH_SETS",
    "BalancePlan",
    "Considered",
    "Move",
    "MoveKind",
    "MoveStep",
    "PlanSummary",
    "SearchLimits",
    "SearchRun",
    "SearchSpec",
    "StepKind",
    "consider",
    "keep_plan",
    "plan_balance",
    "run_search",
    "searches",
    "stops_at_greedy",
    "trim_run",
    "which_prefer",
    "which_searches",
]

DEFAULT_MIN_GAIN = 0.01
DEFAULT_MIN_GAIN_LIMIT = 0.1
DEFAULT_COST_TOLERANCE = 0.002
# How many of the best moves the full set's lookahead and pairs searches weigh
# unless told otherwise (0 or 1: the greedy search alone, as hbal's).
DEFAULT_LOOKAHEAD = 3
# Which searches run (`which_searches`): "full" (greedy, lookahead K, pairs K,
# frugal), "quick" (greedy, frugal), "greedy" (alone, as hbal's), or "auto",
# the default: "full" on clusters below `QUICK_FROM` instances times nodes,
# "quick" from there on.
SEARCH_SETS = ("auto", "full", "quick", "greedy")
DEFAULT_SEARCHES = "auto"
# Where "auto" turns "quick". The lookahead and pairs searches take about 3
# and 1.2 times the greedy search's time. Against hbal, on 30 generated
# clusters of 8 and 16 nodes with 60 to 200 instances (at most 3,200 instances
# times nodes) keeping their plans ended no higher in no more moves on 18
# where "quick" did on 10; on 17 of 16 to 24 nodes with 150 to 520 instances
# (3,600 to 8,320) on 7 where "quick" did on 8, "quick" copying less data
# over them (docs/balance.md). 3,500 lies between the two sizes measured.
QUICK_FROM = 3500
# Which of the searches' plans `corral balance` keeps (`keep_plan`): "budget",
# the one ending lowest in no more moves than the greedy plan; "moves", the
# shortest ending no higher than it; "score", the lowest; "auto", the default
# (`which_prefer`): "moves" with the quick set, "budget" with the others. On
# the 30 smaller clusters (the full set) "budget" kept plans ending no higher
# than hbal's in no more moves on 18 where "moves" did on 12; on the 17 larger
# ones (the quick set) "moves" did on 9 where "budget" did on 8, in 2.5 % fewer
# moves and 2.7 % less data over them (docs/balance.md).
DEFAULT_PREFER = "auto"
PREFER = ("auto", "budget", "moves", "score")


# How a search picks each move: the best one as hbal does ("greedy",
# `choose_as_hbal`), the least data among the near-best (`choose`; "near":
# within `cost_tolerance`, "frugal": within the wider `FRUGAL_TOLERANCE`), or
# among the best few by `pick_ahead` or by `pick_pair`.
Pick = Literal["greedy", "near", "frugal", "ahead", "pairs"]

# The frugal search's cost tolerance: among moves whose gains are within this
# share of the best one, the one copying the least data is taken (the greedy
# search's window is `DEFAULT_COST_TOLERANCE`). Chosen among 0.3 to 2 % on the
# bench's clusters and 30 smaller ones (docs/balance.md).
FRUGAL_TOLERANCE = 0.005

# Two final scores this close are the same score (float rounding between the
# step-by-step working total and the full recomputation).
_SAME = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchSpec:
    """One of the searches a plan is chosen among: its name (`BalancePlan.search`),
    how many candidates it weighs per move and how it picks among them."""

    name: str
    width: int
    pick: Pick


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchLimits:
    """When every search stops (`plan_balance`'s arguments of those names)."""

    max_moves: int = 1000
    min_gain: float = DEFAULT_MIN_GAIN
    min_gain_limit: float = DEFAULT_MIN_GAIN_LIMIT
    cost_tolerance: float = DEFAULT_COST_TOLERANCE

    def __post_init__(self) -> None:
        if self.max_moves < 0:
            raise ValueError("max_moves must not be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchRun:
    """What one search chose: the moves (instance, new primary, new secondary,
    by index), the working score after each, how many candidates it scored and
    why it stopped. Plain values, so that a search can run in another process
    (`reactors.balance.cores`)."""

    spec: SearchSpec
    moves: tuple[tuple[int, int, int], ...]
    totals: tuple[float, ...]
    scored: int
    stopped_by: str
    # the working score before the first move
    start: float
    # the candidates scored once each move was chosen (`trim_run`)
    scored_at: tuple[int, ...] = ()
    # whether it ends at its first move reaching the greedy plan's score
    # (stopped there by `run_search`'s `reach`, or cut there by `trim_run`)
    reached: bool = False

    @property
    def end(self) -> float:
        """The working score after the last move: for the greedy run, the
        score the other runs are cut at (`consider`) or stop at (`trim_run`),
        known the moment it ends."""
        return self.totals[-1] if self.totals else self.start


def which_searches(*, asked: str, lookahead: int, cluster: BCluster) -> str:
    """The set of searches that runs when `asked` (one of `SEARCH_SETS`) is:
    "auto" is "full" below `QUICK_FROM` instances times nodes and "quick" from
    there on; a `lookahead` below 2 is the greedy search alone ("greedy"),
    whatever is asked, except that it cannot go with "full" or "quick"."""
    if asked not in SEARCH_SETS:
        raise ValueError(f"searches must be one of {', '.join(SEARCH_SETS)}, not {asked!r}")
    if lookahead < 0:
        raise ValueError("lookahead must not be negative")
    if lookahead < 2:
        if asked in ("full", "quick"):
            raise ValueError(
                f"lookahead {lookahead} is the greedy search alone; it does not go with "
                f"searches {asked!r}"
            )
        return "greedy"
    if asked == "auto":
        work = len(cluster.instances) * len(cluster.nodes)
        return "full" if work < QUICK_FROM else "quick"
    return asked


def which_prefer(*, asked: str, which: str) -> str:
    """The rule `keep_plan` keeps a plan by when `asked` (one of `PREFER`) is,
    for the set of searches `which` (`which_searches`'s answer): "auto" is
    "moves" with the quick set and "budget" with the others."""
    check_prefer(asked)
    if asked != "auto":
        return asked
    return "moves" if which == "quick" else "budget"


def stops_at_greedy(prefer: str) -> bool:
    """Whether, under the rule `prefer` (`which_prefer`'s answer), each search
    but the greedy one ends at its first move reaching the greedy plan's score
    (`trim_run`): with "moves" what comes after that never makes a plan kept."""
    return prefer == "moves"


def searches(*, lookahead: int, which: str) -> tuple[SearchSpec, ...]:
    """The searches of a set (`which_searches`'s answer) whose plans are weighed,
    the greedy one (hbal's step) first: with "full", also the lookahead and the
    pairs ones (`lookahead` wide, 2 or more), "greedy, less data" and the frugal
    one; with "quick", "greedy, less data" and the frugal one."""
    if which not in SEARCH_SETS[1:]:
        raise ValueError(f"no such set of searches: {which!r}")
    specs = [SearchSpec(name="greedy", width=1, pick="greedy")]
    if which == "full":
        if lookahead < 2:
            raise ValueError("the full set of searches needs a lookahead of 2 or more")
        specs.append(SearchSpec(name=f"lookahead {lookahead}", width=lookahead, pick="ahead"))
        specs.append(SearchSpec(name=f"pairs {lookahead}", width=lookahead, pick="pairs"))
    if which != "greedy":
        specs.append(SearchSpec(name="greedy, less data", width=1, pick="near"))
        specs.append(SearchSpec(name="frugal", width=1, pick="frugal"))
    return tuple(specs)


def plan_balance(
    *,
    cluster: BCluster,
    max_moves: int = 1000,
    min_gain: float = DEFAULT_MIN_GAIN,
    min_gain_limit: float = DEFAULT_MIN_GAIN_LIMIT,
    cost_tolerance: float = DEFAULT_COST_TOLERANCE,
    avoid: frozenset[str] = frozenset(),
    fold_repeats: bool = True,
    lookahead: int = DEFAULT_LOOKAHEAD,
    prefer: str = DEFAULT_PREFER,
    search_set: str = DEFAULT_SEARCHES,
) -> BalancePlan:
    """Plan moves, best first, until no move gains enough or `max_moves` are
    planned. `avoid`: nodes that must take nothing (e.g. unhealthy ones).

    Which searches plan is `which_searches(asked=search_set, ...)`'s answer:
    the greedy one always; with "full" also choosing each move among the
    `lookahead` best by the best pair it starts (`pick_ahead`), and again by
    its gain plus that of the best move it leaves open (`pick_pair`); with
    "full" or "quick" also the frugal one. Each plan but the greedy one is
    considered whole and cut at its first move that reaches the greedy plan's
    final score; one of them is kept (`keep_plan`, by `prefer`), the others'
    figures are in `dropped`. The searches run one after another here;
    `reactors.balance.cores` runs them on several cores, to the same plan.
    A cluster of several node groups is planned one group at a time
    (`reactors.balance.groups`)."""
    if len(groups_with_nodes(cluster)) > 1:
        by_group = [
            (
                g,
                plan_balance(
                    cluster=view,
                    max_moves=max_moves,
                    min_gain=min_gain,
                    min_gain_limit=min_gain_limit,
                    cost_tolerance=cost_tolerance,
                    avoid=avoid,
                    fold_repeats=fold_repeats,
                    lookahead=lookahead,
                    prefer=prefer,
                    search_set=search_set,
                ),
            )
            for g, view in group_views(cluster)
        ]
        return merge_plans(cluster, by_group, avoid=avoid)
    limits = SearchLimits(
        max_moves=max_moves,
        min_gain=min_gain,
        min_gain_limit=min_gain_limit,
        cost_tolerance=cost_tolerance,
    )
    which = which_searches(asked=search_set, lookahead=lookahead, cluster=cluster)
    specs = searches(lookahead=lookahead, which=which)
    rule = which_prefer(asked=prefer, which=which)
    trim = stops_at_greedy(rule)
    plans: list[Considered] = []
    scored = 0
    greedy_score: float | None = None
    for spec in specs:
        reach = None if greedy_score is None or not trim else greedy_score
        run = run_search(
            cluster=cluster, avoid=avoid, spec=spec, limits=limits, reach=_known(reach)
        )
        if reach is not None:
            run = trim_run(run, reach)
        if greedy_score is None:
            greedy_score = run.end
        scored += run.scored
        plans.extend(
            consider(
                cluster=cluster,
                avoid=avoid,
                run=run,
                greedy_score=greedy_score,
                fold_repeats=fold_repeats,
            )
        )
    return keep_plan(
        cluster=cluster, avoid=avoid, plans=plans, prefer=rule, searches=which, scored=scored
    )


def check_prefer(prefer: str) -> None:
    """`prefer` is one of the rules a plan can be asked to be kept by (`PREFER`)."""
    if prefer not in PREFER:
        raise ValueError(f"prefer must be one of {', '.join(PREFER)}, not {prefer!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Considered:
    """One plan `keep_plan` weighs: its moves (folded), why it stopped, and
    its figures (`summary`, its name in `search`), worked out without building
    it."""

    moves: tuple[tuple[int, int, int], ...]
    stopped_by: str
    figures: PlanSummary


def consider(
    *,
    cluster: BCluster,
    avoid: frozenset[str],
    run: SearchRun,
    greedy_score: float | None,
    fold_repeats: bool = True,
) -> list[Considered]:
    """The plans a run gives `keep_plan`: the whole run, and for a
    non-greedy run also its shortest part that already ends as low as the
    greedy plan (`greedy_score`: the greedy run's `end`), each folded
    (`fold_repeats`)."""
    seq, name = list(run.moves), run.spec.name
    if run.reached:
        name = f"{name}{_CUT}"
    mine = [(seq, run.stopped_by, name)]
    if run.spec.pick != "greedy":
        if greedy_score is None:
            raise ValueError("a non-greedy run is weighed against the greedy plan's score")
        reach = next((k for k, t in enumerate(run.totals) if t <= greedy_score + _SAME), None)
        if reach is not None and reach + 1 < len(seq):
            why = _reached(greedy_score)
            mine.append((seq[: reach + 1], why, f"{name}{_CUT}"))
    if exactly_modelled(cluster) is not None and seq:
        # the search scored with a model that leaves something out: the plan
        # is also cut where the exact score is lowest
        exact = exact_totals(cluster=cluster, avoid=avoid, moves=seq)
        best = min(range(len(exact)), key=lambda k: (exact[k], k))
        if best + 1 < len(seq):
            mine.append((seq[: best + 1], "the exact score is lowest here", f"{name}, exact"))
    out: list[Considered] = []
    for moves, why, plan_name in mine:
        if fold_repeats:
            moves = fold(cluster=cluster, avoid=avoid, moves=moves)
        figures = _figures(cluster=cluster, avoid=avoid, moves=moves, search=plan_name)
        out.append(Considered(moves=tuple(moves), stopped_by=why, figures=figures))
    return out


def keep_plan(
    *,
    cluster: BCluster,
    avoid: frozenset[str],
    plans: Sequence[Considered],
    prefer: str,
    searches: str,
    scored: int,
) -> BalancePlan:
    """Of the `consider`ed plans (the greedy one first, the others in the
    order of their runs), the one `prefer` asks for, built; the others'
    figures in `dropped`; `searches`: the set they came from
    (`BalancePlan.searches`); `scored`: the runs' candidates scored together.

    `prefer` is a rule `which_prefer` answers, not "auto".
    `prefer="budget"` (the full set's): of the plans taking no more moves than
    the greedy plan (as hbal counts them), the one ending lowest (then fewer
    moves, then less data); "moves": of the plans ending no higher than the
    greedy plan, the one with the fewest moves (then the lower score, then
    less data); "score": the one ending lowest (then fewer moves, then less
    data). Either way the plan kept is no worse than the greedy plan in both
    score and moves, except with "score", which can take more moves."""
    if prefer not in PREFER[1:]:
        raise ValueError(f"keep_plan keeps by budget, moves or score, not {prefer!r}")
    figures = [c.figures for c in plans]
    greedy = figures[0]
    if prefer == "budget":
        # the greedy plan's moves are the budget: it always qualifies
        eligible = [k for k, f in enumerate(figures) if f.moves_as_hbal <= greedy.moves_as_hbal]
    elif prefer == "score":
        eligible = list(range(len(figures)))
    else:
        # (the greedy plan always qualifies, even when the score is NaN, as
        # htools' is for nodes with no spindles: 0/0 in a ratio)
        eligible = [
            k
            for k, f in enumerate(figures)
            if k == 0 or f.score_after <= greedy.score_after + _SAME
        ]

    def order(k: int) -> tuple[float, float, int]:
        f = figures[k]
        if prefer == "moves":
            return (f.moves_as_hbal, round(f.score_after, 9), f.data_mib)
        return (round(f.score_after, 9), f.moves_as_hbal, f.data_mib)

    kept = min(eligible, key=order)
    built = _build(
        cluster=cluster,
        avoid=avoid,
        moves=list(plans[kept].moves),
        before=score(cluster).total,
        scored=scored,
        stopped_by=plans[kept].stopped_by,
    )
    return replace(
        built,
        search=figures[kept].search,
        dropped=tuple(f for k, f in enumerate(figures) if k != kept),
        searches=searches,
        prefer=prefer,
    )


def run_search(
    *,
    cluster: BCluster,
    avoid: frozenset[str],
    spec: SearchSpec,
    limits: SearchLimits,
    reach: Callable[[], float | None] = lambda: None,
) -> SearchRun:
    """One search, move after move. Each move is the best, as hbal picks it
    (`choose_as_hbal`, `pick="greedy"`), or the least data among gains within
    `limits.cost_tolerance` of the best (`choose`, `"near"`; `"frugal"`: within
    `FRUGAL_TOLERANCE`, unless `cost_tolerance` is wider), or picked among the
    `width` best by `pick_ahead` (`"ahead"`) or by `pick_pair` (`"pairs"`).
    A search but the greedy one also stops after a move that ends no higher
    than `reach()`, once that gives a score (the greedy plan's, when it is
    known and `stops_at_greedy`; another process may set it while this one
    searches, so where it stops can vary, but `trim_run` at that score gives
    one run whatever the timing)."""
    work = Work(cluster, avoid)
    search: Search | ExactSearch = ExactSearch(work) if work.plain else Search(work)
    current = start = work.total()
    chosen: list[tuple[int, int, int]] = []
    totals: list[float] = []
    scored_at: list[int] = []
    stopped_by = "max moves reached"
    reached = False
    greedy = spec.pick == "greedy"
    pick = spec.pick
    if pick == "greedy":
        tolerance = TIE
    elif pick == "near":
        tolerance = limits.cost_tolerance
    elif pick == "frugal":
        tolerance = max(limits.cost_tolerance, FRUGAL_TOLERANCE)
    else:
        tolerance = max(limits.cost_tolerance, LOOKAHEAD_TOLERANCE)
    # the lookahead only ever weighs a step's first `width` distinct moves
    top = spec.width if pick == "ahead" else 0
    ahead: list[Candidate] | None = None  # the next step's candidates, when known
    while len(chosen) < limits.max_moves:
        cands = ahead if ahead is not None else search.best(tolerance=tolerance, top=top)
        ahead = None
        if not cands:
            stopped_by = "no move lowers the score"
            break
        gain = -cands[0].delta
        if current <= limits.min_gain_limit and gain < limits.min_gain:
            stopped_by = f"best gain {gain:.6f} below --min-gain {limits.min_gain}"
            break
        applied = False
        if pick == "ahead":
            picked = pick_ahead(search=search, cands=cands, width=spec.width, tolerance=tolerance)
            move, ahead, applied = picked.pick, picked.after, picked.applied
        elif pick == "pairs":
            move = pick_pair(work=work, cands=cands, width=spec.width)
        elif pick == "greedy":
            move = choose_as_hbal(cands)
        else:
            move = choose(cands, work.names, work.insts)
        if not applied:
            work.apply(move.inst, move.new_p, move.new_s)
        current = work.total()
        chosen.append((move.inst, move.new_p, move.new_s))
        totals.append(current)
        scored_at.append(search.scored)
        target = None if greedy else reach()
        if target is not None and current <= target + _SAME:
            stopped_by, reached = _reached(target), True
            break
    return SearchRun(
        spec=spec,
        moves=tuple(chosen),
        totals=tuple(totals),
        scored=search.scored,
        stopped_by=stopped_by,
        start=start,
        scored_at=tuple(scored_at),
        reached=reached,
    )


def trim_run(run: SearchRun, greedy_score: float) -> SearchRun:
    """A search but the greedy one ending at its first move that reaches
    `greedy_score` (the greedy plan's: `stops_at_greedy`), with the candidates
    it had scored by then; as it is when it never does. The same run whether
    the search stopped there itself (`run_search`'s `reach`) or went on."""
    if run.spec.pick == "greedy":
        raise ValueError("the greedy run is the one the others are trimmed against")
    reach = next((k for k, t in enumerate(run.totals) if t <= greedy_score + _SAME), None)
    if reach is None:
        return run
    return replace(
        run,
        moves=run.moves[: reach + 1],
        totals=run.totals[: reach + 1],
        scored=run.scored_at[reach],
        stopped_by=_reached(greedy_score),
        scored_at=run.scored_at[: reach + 1],
        reached=True,
    )


def _known(score: float | None) -> Callable[[], float | None]:
    return lambda: score


# The name of a plan cut where its search reached the greedy plan's score.
_CUT = ", cut at the greedy score"


def _reached(greedy_score: float) -> str:
    return f"reached the greedy plan's score {greedy_score:.8f}"


def _build(
    *,
    cluster: BCluster,
    avoid: frozenset[str],
    moves: list[tuple[int, int, int]],
    before: float,
    scored: int,
    stopped_by: str,
) -> BalancePlan:
    work = Work(cluster, avoid)
    out: list[Move] = []
    for i, kind, old_p, old_s in _replay(work, moves):
        new_p, new_s = work.p[i], work.s[i]
        inst = work.insts[i]
        out.append(
            Move(
                instance=inst.name,
                kind=kind,
                old_primary=work.names[old_p],
                old_secondary=work.names[old_s],
                new_primary=work.names[new_p],
                new_secondary=work.names[new_s],
                data_mib=COPIES[kind] * inst.dsk,
                migrations=MIGRATIONS[kind],
                score_after=work.total(),
            )
        )
    after = _cluster_after(cluster, work)
    final = score(after).total
    if out:
        out[-1] = replace(out[-1], score_after=final)
    return BalancePlan(
        moves=tuple(out),
        score_before=before,
        score_after=final,
        data_mib=sum(m.data_mib for m in out),
        migrations=sum(m.migrations for m in out),
        n1_failures_before=n1_failures(cluster),
        n1_failures_after=n1_failures(after),
        cluster_after=after,
        candidates_scored=scored,
        stopped_by=stopped_by,
    )


def _replay(
    work: Work, moves: Sequence[tuple[int, int, int]]
) -> Iterator[tuple[int, MoveKind, int, int]]:
    """Carry out `moves` on `work` one by one, checking each (`check_plan_move`);
    after each: the instance, the move's kind and the instance's old primary and
    secondary."""
    for i, new_p, new_s in moves:
        kind = check_plan_move(work, i, new_p, new_s)
        if kind is None:  # pragma: no cover - the search only keeps valid moves
            raise AssertionError(f"planned move of {work.insts[i].name} breaks a rule")
        old_p, old_s = work.p[i], work.s[i]
        work.apply(i, new_p, new_s)
        yield i, kind, old_p, old_s


def _figures(
    *, cluster: BCluster, avoid: frozenset[str], moves: list[tuple[int, int, int]], search: str
) -> PlanSummary:
    """The figures `_build` would give the plan of these moves (`summary`),
    without building it: each move's kind, and the score once all are done."""
    work = Work(cluster, avoid)
    as_hbal = data = migrations = 0
    for i, kind, _, _ in _replay(work, moves):
        as_hbal += HBAL_MOVES[kind]
        data += COPIES[kind] * work.insts[i].dsk
        migrations += MIGRATIONS[kind]
    return PlanSummary(
        search=search,
        score_after=score(_cluster_after(cluster, work)).total,
        moves=len(moves),
        moves_as_hbal=as_hbal,
        data_mib=data,
        migrations=migrations,
    )


def exact_totals(
    *, cluster: BCluster, avoid: frozenset[str], moves: Sequence[tuple[int, int, int]]
) -> list[float]:
    """The exact score (`reactors.htools.score`) after each of the moves."""
    work = Work(cluster, avoid)
    out: list[float] = []
    for i, new_p, new_s in moves:
        work.apply(i, new_p, new_s)
        out.append(score(_cluster_after(cluster, work)).total)
    return out


def _cluster_after(cluster: BCluster, work: Work) -> BCluster:
    """The cluster once the work's moves are done, as `render` should write it
    for htools: each node's reported free memory shifted by the running memory
    it gained or lost (so its unaccounted memory stays as it was), its free
    disk, and on a node with exclusive storage its free spindles."""
    spindles = {n.name: n.free_spindles for n in cluster.nodes if n.exclusive_storage}
    instances: list[BInstance] = []
    for i, inst in enumerate(cluster.instances):
        if work.movable[i]:
            moved = replace(inst, pnode=work.names[work.p[i]], snode=work.names[work.s[i]])
            if spindles and moved != inst:
                _shift_spindles(spindles, inst, moved)
            inst = moved
        instances.append(inst)
    nodes: list[BNode] = [
        replace(
            n,
            f_mem=work.f_mem[k],
            f_dsk=work.f_dsk[k],
            free_spindles=spindles.get(n.name, n.free_spindles),
        )
        for k, n in enumerate(cluster.nodes)
    ]
    return replace(cluster, nodes=tuple(nodes), instances=tuple(instances))


def _shift_spindles(free: dict[str, int], old: BInstance, new: BInstance) -> None:
    """Free spindles of exclusive-storage nodes as htools change them when an
    instance's disks leave a node and arrive on another (an instance of
    unknown spindles leaves a node's count alone and sets an arriving one's
    to -1)."""
    before, after = {old.pnode, old.snode}, {new.pnode, new.snode}
    for node in before - after:
        if node in free and old.disk_spindles is not None:
            free[node] += old.disk_spindles
    for node in after - before:
        if node in free:
            free[node] = -1 if old.disk_spindles is None else free[node] - old.disk_spindles
