"""A candidate move's exact effect on the cluster score, from the two to four nodes
it changes: the current means and standard deviations of the scored per-node
values (`Stats`), each changed node's contribution to the sums of deviations
(`Deltas.node_delta`, memoised for the step), the standard deviations they give
(`Deltas.combine`), and the exclusion-tag and location components
(`Deltas.tags_delta`, `Deltas.loc_delta`). The idea of `reactors.score_delta`,
extended to failovers and to moves that take a copy off a node.

Pure: no I/O, no logging, no asyncio; it reads the `Work`, never changes it.
Comes after `reactors.balance_work`; used by `reactors.balance_search` (every
candidate it scores) and `reactors.balance_bounds` (the step's means and
deviations).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from reactors.balance_work import (
    M_WEIGHT,
    NM,
    W_LOC,
    W_LOC_EXCL,
    W_TAGS,
    Inst,
    Work,
)


@dataclass(slots=True)
class Stats:
    """Per metric: the current mean, the number of online nodes, the current
    standard deviation; deviations of candidate values are taken from the mean."""

    center: list[float]
    std: list[float]
    n: int


def stats_of(work: Work) -> Stats:
    on = work.online_idx
    n = len(on)
    center: list[float] = []
    std: list[float] = []
    for m in range(NM):
        xs = [work.vals[k][m] for k in on]
        mean = sum(xs) / n
        center.append(mean)
        std.append(math.sqrt(sum((x - mean) * (x - mean) for x in xs) / n))
    return Stats(center=center, std=std, n=n)


class Deltas:
    """Exact score deltas at the current placement; `start` at every step."""

    def __init__(self, work: Work) -> None:
        self.w = work
        self.stats = stats_of(work)
        self.vn: list[float] = []
        self.memo: dict[tuple[int, ...], tuple[tuple[tuple[int, float], ...], float]] = {}
        self.tags_memo: dict[tuple[tuple[str, ...], int, int], float] = {}

    def start(self) -> None:
        """A new step: the current means and deviations, an empty memo."""
        self.stats = stats_of(self.w)
        self.vn = [std * std * self.stats.n for std in self.stats.std]  # n V, for combine
        self.memo = {}
        self.tags_memo = {}

    def node_delta(
        self,
        k: int,
        dfm: int,
        dstop: int,
        ddsk: int,
        dcpu: int,
        dsp: int,
        dnp: int,
        dns: int,
        new_r: int,
        acc: list[float],
    ) -> float:
        """Adds node k's change of every scored per-node value to `acc` (d1 and d2
        per metric, interleaved) and returns the change of the scalar components.
        Memoised for the step: many candidates share a node change."""
        key = (k, dfm, dstop, ddsk, dcpu, dsp, dnp, dns, new_r)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = self._node_delta(*key)
        entries, scalar = hit
        for j, v in entries:
            acc[j] += v
        return scalar

    def _node_delta(
        self,
        k: int,
        dfm: int,
        dstop: int,
        ddsk: int,
        dcpu: int,
        dsp: int,
        dnp: int,
        dns: int,
        new_r: int,
    ) -> tuple[tuple[tuple[int, float], ...], float]:
        old, new, scalar = self.w.node_change(k, dfm, dstop, ddsk, dcpu, dsp, dnp, dns, new_r)
        c = self.stats.center
        entries: list[tuple[int, float]] = []
        for m, (nv, ov) in enumerate(zip(new, old, strict=True)):
            if nv != ov:
                cm = c[m]
                entries.append((2 * m, nv - ov))
                entries.append((2 * m + 1, (nv - cm) * (nv - cm) - (ov - cm) * (ov - cm)))
        return tuple(entries), scalar

    def combine(self, acc: list[float]) -> float:
        n = self.stats.n
        sqrt = math.sqrt
        out = 0.0
        it = iter(acc)
        for weight, std, vn, d1, d2 in zip(M_WEIGHT, self.stats.std, self.vn, it, it, strict=True):
            if d1 == 0.0 and d2 == 0.0:
                continue
            var = (vn + d2) / n - (d1 / n) * (d1 / n)
            out += weight * ((sqrt(var) if var > 0.0 else 0.0) - std)
        return out

    def tags_delta(self, inst: Inst, src: int, dst: int) -> float:
        """The change of the tag and location-exclusion components when the
        instance's primary moves from src to dst. Memoised for the step."""
        if not inst.excl:
            return 0.0
        key = (inst.excl, src, dst)
        hit = self.tags_memo.get(key)
        if hit is None:
            hit = self.tags_memo[key] = self._tags_delta(inst, src, dst)
        return hit

    def _tags_delta(self, inst: Inst, src: int, dst: int) -> float:
        w = self.w
        out = 0.0
        if w.online[src]:
            tags = w.ptags[src]
            out -= W_TAGS * sum(1 for e in inst.excl if tags[e] >= 2)
        if w.online[dst]:
            tags = w.ptags[dst]
            out += W_TAGS * sum(1 for e in inst.excl if tags[e] >= 1)
        if w.has_locs:
            change: Counter[tuple[str, str]] = Counter()
            if w.online[src]:
                for loc in w.locs[src]:
                    for e in inst.excl:
                        change[(loc, e)] -= 1
            if w.online[dst]:
                for loc in w.locs[dst]:
                    for e in inst.excl:
                        change[(loc, e)] += 1
            for key, d in change.items():
                before = w.loc_excl.get(key, 0)
                after = before + d
                out += W_LOC_EXCL * (
                    (after - (1 if after > 0 else 0)) - (before - (1 if before > 0 else 0))
                )
        return out

    def loc_delta(self, old_p: int, old_s: int, new_p: int, new_s: int) -> float:
        w = self.w
        if not w.has_locs:
            return 0.0
        before = len(w.locs[old_p] & w.locs[old_s]) if w.online[old_p] else 0
        after = len(w.locs[new_p] & w.locs[new_s]) if w.online[new_p] else 0
        return W_LOC * (after - before)
