"""The balancer's optional one-move lookahead: instead of taking the move that
lowers the score most, try each of the few best moves with the best move that
could follow it and take the one whose pair lowers the score most. Greedy
search (hbal's, and corral's default) can take a move that leaves nothing good
to do next; looking one move further avoids some of those, at the price of one
more search step per move tried.

Pure: no I/O, no logging, no asyncio. It changes the `Work` only to try a move
and always puts it back before returning. Comes after `reactors.balance_search`
(the step's candidates); its choice goes back to `reactors.balance_plan`, which
applies it.
"""

from __future__ import annotations

from reactors.balance_search import Cand, Search

# Candidates whose gain is within this share of the best one are tried (at
# most `width` of them, best first).
LOOKAHEAD_TOLERANCE = 0.05


def pick_ahead(*, search: Search, cands: list[Cand], width: int) -> Cand:
    """Of the first `width` distinct moves in `cands` (best first), the one
    whose gain plus the best gain after it is highest; the earlier one on a
    tie. Every move tried is undone."""
    work = search.w
    tried: list[Cand] = []
    seen: set[tuple[int, int, int]] = set()
    for cand in cands:
        key = (cand.inst, cand.new_p, cand.new_s)
        if key not in seen:
            seen.add(key)
            tried.append(cand)
        if len(tried) >= width:
            break
    best = tried[0]
    best_value = float("-inf")
    for cand in tried:
        old_p, old_s = work.p[cand.inst], work.s[cand.inst]
        work.apply(cand.inst, cand.new_p, cand.new_s)
        after = search.best(tolerance=0.0)
        work.apply(cand.inst, old_p, old_s)
        value = -cand.delta - (after[0].delta if after else 0.0)
        if value > best_value + 1e-9:
            best, best_value = cand, value
    return best
