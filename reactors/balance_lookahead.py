"""The balancer's one-move lookahead (on by default), in two strengths. Greedy
search (hbal's, and corral's with `--lookahead 0`) can take a move that leaves
nothing good to do next; looking one move further avoids some of those.

`pick_ahead` tries each of the few best moves with the best move that could
follow it and takes the one whose pair lowers the score most, at the price of
one more search step per move tried. Each trial's search keeps the candidates
within the tolerance up to the `width`-th distinct move, not only the best, so
that the picked move's trial already holds the next step's candidates
(`Ahead.after`): a step then costs one search per move tried, not one more. No
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

Pure: no I/O, no logging, no asyncio. `pick_ahead` changes the `Work` only to
try a move and always puts it back before returning; `pick_pair` only reads it.
Comes after `reactors.balance_search` (the step's candidates); its choice goes
back to `reactors.balance_plan`, which applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

from reactors.balance_search import Cand, Search
from reactors.balance_work import Work

# Candidates whose gain is within this share of the best one are tried (at
# most `width` of them, best first).
LOOKAHEAD_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class Ahead:
    """The move picked, and the candidates after it (within
    `LOOKAHEAD_TOLERANCE`, best first) when its trial found them, which are the
    next step's candidates: the search need not run again for them."""

    pick: Cand
    after: list[Cand] | None


def pick_ahead(
    *, search: Search, cands: list[Cand], width: int, tolerance: float = LOOKAHEAD_TOLERANCE
) -> Ahead:
    """Of the first `width` distinct moves in `cands` (best first), the one
    whose gain plus the best gain after it is highest; the earlier one on a
    tie. A single move is taken untried. Every move tried is undone; each
    trial keeps the candidates within `tolerance` of its best, up to its
    `width`-th distinct move."""
    work = search.w
    tried = _distinct(cands, width)
    if len(tried) == 1:
        return Ahead(pick=tried[0], after=None)
    best = Ahead(pick=tried[0], after=None)
    best_value = float("-inf")
    for cand in tried:
        old_p, old_s = work.p[cand.inst], work.s[cand.inst]
        work.apply(cand.inst, cand.new_p, cand.new_s)
        after = search.best(tolerance=tolerance, top=width)
        work.apply(cand.inst, old_p, old_s)
        value = -cand.delta - (after[0].delta if after else 0.0)
        if value > best_value + 1e-9:
            best, best_value = Ahead(pick=cand, after=after), value
    return best


def pick_pair(*, work: Work, cands: list[Cand], width: int) -> Cand:
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


def _distinct(cands: list[Cand], width: int) -> list[Cand]:
    """The first `width` candidates that are different moves (one move can be
    listed under two kinds)."""
    tried: list[Cand] = []
    seen: set[tuple[int, int, int]] = set()
    for cand in cands:
        key = (cand.inst, cand.new_p, cand.new_s)
        if key not in seen:
            seen.add(key)
            tried.append(cand)
        if len(tried) >= width:
            break
    return tried
