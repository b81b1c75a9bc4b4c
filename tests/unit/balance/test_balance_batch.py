"""`reactors.balance.step.batch.own_sides` (what the planner runs) against the
one-instance definition it reproduces (`reactors.balance.step.sides`: `own_side`,
`coef`, `Sides.put`), bit for bit.

On generated clusters (uneven; with a drained node, i.e. an offline one to
htools; without spindles, whose spindle values are infinite, or NaN on a node
left without any; with location tags), the planner's working model and search are built as
`plan_balance` builds them; every time the search refreshes its own sides
(`Search._refresh`: all movable instances at the first step, then the instances
on the nodes a move changed), the batch's result is compared with:

- the same instances' `own_side` written one by one with `Sides.put` into a second
  `Sides` kept alongside from step to step: every array, stale rows included, and
  the key and exclusion-tag tables must be identical;
- every movable instance's `own_side` at the current placement, from scratch:
  the valid rows must be identical (keys compared as the tuples they stand for),
  so the refresh leaves no own side stale.

The moves are the first ones `plan_balance` plans, applied as it applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from reactors.balance.moves import MoveKind
from reactors.balance.plan import plan_balance
from reactors.balance.step import search as balance_search
from reactors.balance.step.batch import Figures, own_sides
from reactors.balance.step.search import Search
from reactors.balance.step.sides import FAMILY, NSLOT, SLOT, OwnSide, Sides, own_side
from reactors.balance.work import Work
from reactors.htools.model import LOCATION_TAG_PREFIX, BCluster
from tests.support.states.generated import generated_cluster

MOVES = 5
_FLOATS = ("base_lo", "base_hi", "slope", "scalar", "rng")
_OTHERS = ("has_rng", "valid", "family", "key")
_FO = SLOT[MoveKind.FAILOVER]


def _uneven(*, instances: int = 200, drained: bool = False, spindles: int = 4) -> BCluster:
    return generated_cluster(
        seed=13,
        full=13,
        empty=3,
        instances=instances,
        memory=(512, 1024, 1024, 2048, 4096),
        drained=drained,
        spindles=spindles,
    )


def _located() -> BCluster:
    """The uneven cluster with its nodes in four racks (location tags)."""
    c = _uneven()
    nodes = tuple(replace(n, tags=(f"rack:r{k % 4}",)) for k, n in enumerate(c.nodes))
    return replace(c, nodes=nodes, cluster_tags=(*c.cluster_tags, LOCATION_TAG_PREFIX + "rack"))


CLUSTERS: dict[str, Callable[[], BCluster]] = {
    "uneven": _uneven,
    "drained": lambda: _uneven(drained=True),
    # every spindle value infinite (or NaN on the empty nodes)
    "no-spindles": lambda: _uneven(spindles=0),
    # some nodes hold a single spindle: own sides that take it off are NaN
    "no-spindles-sparse": lambda: _uneven(instances=16, spindles=0),
    "locations": _located,
}


def _same(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    """Equal bit for bit: NaNs where the other has NaN, zeros of the same sign."""
    if a.dtype.kind != "f":
        return a.shape == b.shape and bool(np.array_equal(a, b))
    return bool(
        np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))
    )


def _assert_same(got: Sides, want: Sides) -> None:
    for name in _FLOATS + _OTHERS:
        assert _same(getattr(got, name), getattr(want, name)), name
    assert got.key_ids == want.key_ids
    assert got.keys == want.keys
    assert got.excl_ids == want.excl_ids


def _reference(w: Work, ref: Sides, idx: list[int]) -> list[OwnSide]:
    """`own_side` of each instance, written one at a time with `Sides.put`."""
    owns: list[OwnSide] = []
    for i in idx:
        own, sides = own_side(w, i, ref.excl_ids)
        ref.put(i, sides)
        owns.append(own)
    return owns


def _assert_matches_scratch(w: Work, got: Sides) -> None:
    """The valid rows are every movable instance's own side at this placement."""
    movable = [i for i in range(len(w.insts)) if w.movable[i]]
    want = Sides(len(w.insts))
    _reference(w, want, movable)
    assert _same(got.valid, want.valid)
    rows = np.flatnonzero(want.valid)
    for name in ("base_lo", "base_hi", "slope", "scalar", "has_rng"):
        assert _same(getattr(got, name)[rows], getattr(want, name)[rows]), name
    ranged = rows[want.has_rng[rows]]
    assert _same(got.rng[ranged], want.rng[ranged])
    for r in rows.tolist():
        fam = FAMILY[r % NSLOT]
        assert got.keys[fam][got.key[r]] == want.keys[fam][want.key[r]]


def _assert_can_fail(got: Sides, want: Sides, idx: list[int]) -> None:
    """The comparison catches a one-ulp change of one written value, and a zero
    of the other sign."""
    rows = [i * NSLOT + k for i in idx for k in range(NSLOT) if got.valid[i * NSLOT + k]]
    assert rows
    bad = got.base_lo.copy()
    bad[rows[0], 0] = np.nextafter(bad[rows[0], 0], np.inf)
    assert not _same(bad, want.base_lo)
    assert not _same(np.array([0.0]), np.array([-0.0]))


@pytest.mark.parametrize("name", list(CLUSTERS))
def test_batch_is_own_side_bit_for_bit(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = CLUSTERS[name]()
    plan = plan_balance(cluster=cluster, max_moves=MOVES, fold_repeats=False, lookahead=0)
    assert len(plan.moves) == MOVES, plan.stopped_by

    work = Work(cluster, frozenset())
    search = Search(work)
    ref = Sides(len(work.insts))
    sizes: list[int] = []
    nans: list[bool] = []  # whether a refresh wrote NaN

    def checked(
        w: Work, sides: Sides, idx: list[int], figs: Figures
    ) -> tuple[list[OwnSide], list[int]]:
        assert w is work and sides is search.sides
        owns, r_ps = own_sides(w, sides, idx, figs)
        ref_owns = _reference(w, ref, idx)
        _assert_same(sides, ref)
        assert owns == ref_owns
        for own, r_p in zip(owns, r_ps, strict=True):
            if sides.valid[own.i * NSLOT + _FO]:  # own_side's failover r_p
                assert r_p == w.new_r(own.p, -1, 0, own.s, own.inst.res)
        _assert_matches_scratch(w, sides)
        _assert_can_fail(sides, ref, idx)
        sizes.append(len(idx))
        nans.append(bool(np.isnan(sides.base_lo[sides.valid]).any()))
        return owns, r_ps

    monkeypatch.setattr(balance_search, "own_sides", checked)
    by_name = {inst.name: i for i, inst in enumerate(work.insts)}
    search._refresh()  # the first step: every movable instance
    for move in plan.moves:
        i = by_name[move.instance]
        assert (work.names[work.p[i]], work.names[work.s[i]]) == (
            move.old_primary,
            move.old_secondary,
        )
        work.apply(i, work.index[move.new_primary], work.index[move.new_secondary])
        search._refresh()  # the next step: the instances on the nodes it changed

    assert len(sizes) == MOVES + 1
    assert sizes[0] == sum(work.movable)
    assert all(0 < n < sizes[0] for n in sizes[1:])
    if name == "no-spindles-sparse":
        assert any(nans)
    if name == "drained":
        assert not all(work.online)
    if name == "locations":
        assert work.has_locs
