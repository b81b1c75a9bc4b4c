"""The balancer's one-move lookahead (on by default), in two strengths. Greedy
search (hbal's, and corral's with `--lookahead 0`) can take a move that leaves
nothing good to do next; looking one move further avoids some of those.

`pick_ahead` tries each of the few best moves with the best move that could
follow it and takes the one whose pair lowers the score most, at the price of
one more search step per move tried. Each trial's search keeps the candidates
within the tolerance up to the `width`-th distinct move, not only the best, so
that the picked move's trial already holds the next step's candidates
(`AheadTrial.after`): a step then costs one search per move tried, not one more. No
more are needed (a step only weighs its first `width` distinct moves), and a
search that need not find the others visits fewer candidates
(`Search.best(top=...)`).

`pick_pair` tries nothing: of the few best moves it takes the one whose gain
plus that of the best candidate sharing none of its nodes is highest, so that a
move is passed over when it would spoil a nearly as good one for a slightly
higher gain now. The second move's gain is read off this step's candidates (a
move changes the score's sums, so after it that gain is near, not equal); the
pick itself is a scored candidate like any other. It costs no search beyond the
step's own, which keeps the candidates within the tolerance.

Pure: no I/O, no logging, no asyncio. `pick_ahead` changes the `Work` only to try a
move, and puts every one back before returning but the pick, which it may leave
applied (`AheadTrial.applied`); `pick_pair` only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from reactors.balance.step.exact import ExactSearch
from reactors.balance.step.search import Candidate, Search, move_key
from reactors.balance.work import Work

# Candidates whose gain is within this share of the best one are tried (at
# most `width` of them, best first).
LOOKAHEAD_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class AheadTrial:
    """The move picked, and the candidates after it (within
    `LOOKAHEAD_TOLERANCE`, best first) when its trial found them, which are the
    next step's candidates: the search need not run again for them; and
    whether the pick is already applied to the `Work` (its trial, left in
    place)."""

    pick: Candidate
    after: list[Candidate] | None
    applied: bool = False


def pick_ahead(
    *,
    search: Search | ExactSearch,
    cands: list[Candidate],
    width: int,
    tolerance: float = LOOKAHEAD_TOLERANCE,
) -> AheadTrial:
    """Of the first `width` distinct moves in `cands` (best first), the one
    whose gain plus the best gain after it is highest; the earlier one on a
    tie. A single move is taken untried. Each trial keeps the candidates
    within `tolerance` of its best, up to its `width`-th distinct move.

    The best move is tried last, and when it is the pick (it mostly is) its
    trial is left in place (`AheadTrial.applied`); every other move tried is
    undone. A search refreshes what it keeps for the nodes a move touched, and
    a move undone touches them again: so the pick's nodes are refreshed once,
    not twice more. The order changes nothing else: each trial's search is
    exact, and the pick is weighed in the order of `cands`."""
    work = search.w
    tried = _distinct(cands, width)
    if len(tried) == 1:
        return AheadTrial(pick=tried[0], after=None)
    afters: list[list[Candidate]] = [[] for _ in tried]
    first = tried[0]
    first_was = (work.p[first.inst], work.s[first.inst])
    for k in [*range(1, len(tried)), 0]:
        cand = tried[k]
        old_p, old_s = work.p[cand.inst], work.s[cand.inst]
        work.apply(cand.inst, cand.new_p, cand.new_s)
        afters[k] = search.best(tolerance=tolerance, top=width)
        if k:
            work.apply(cand.inst, old_p, old_s)
    picked, best_value, found = 0, float("-inf"), False
    for k, cand in enumerate(tried):
        after = afters[k]
        value = -cand.delta - (after[0].delta if after else 0.0)
        if value > best_value + 1e-9:
            picked, best_value, found = k, value, True
    if picked:
        work.apply(first.inst, *first_was)
    return AheadTrial(
        pick=tried[picked], after=afters[picked] if found else None, applied=not picked
    )


def pick_pair(*, work: Work, cands: list[Candidate], width: int) -> Candidate:
    """Of the first `width` distinct moves in `cands` (best first), the one
    whose gain plus the gain of the best candidate moving another instance and
    touching none of its nodes (old or new) is highest; the earlier one on a
    tie."""
    tried = _distinct(cands, width)
    best, best_value = tried[0], float("-inf")
    for cand in tried:
        nodes = {work.p[cand.inst], work.s[cand.inst], cand.new_p, cand.new_s}
        then = next(
            (
                -other.delta
                for other in cands
                if other.inst != cand.inst
                and nodes.isdisjoint(
                    (work.p[other.inst], work.s[other.inst], other.new_p, other.new_s)
                )
            ),
            0.0,
        )
        value = -cand.delta + then
        if value > best_value + 1e-9:
            best, best_value = cand, value
    return best


def _distinct(cands: list[Candidate], width: int) -> list[Candidate]:
    """The first `width` candidates that are different moves (one move can be
    listed under two kinds)."""
    tried: list[Candidate] = []
    seen: set[tuple[int, int, int]] = set()
    for cand in cands:
        key = move_key(cand)
        if key not in seen:
            seen.add(key)
            tried.append(cand)
        if len(tried) >= width:
            break
    return tried
