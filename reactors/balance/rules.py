"""The placement rules one move must keep, checked on the working model: which
kind a move from an instance's placement to a new pair is, whether the nodes
that take something have the memory, disk, vCPU ratio (counting the host's own
CPUs, as Ganeti does) and failure domains for it, whether a new primary
keeps anti-affinity (no primary beside one sharing an exclusion tag),
whether every node that gains a reservation keeps N+1 (`check_move`), and whether
a whole sequence of moves keeps them step after step (`valid_sequence`), where
a move may also be a relocation of both copies (`check_plan_move`).

Pure: no I/O, no logging, no asyncio; it checks copies, it changes nothing outside the
`Work` it is given.
"""

from __future__ import annotations

from reactors.balance.moves import MoveKind
from reactors.balance.work import Work
from reactors.htools.model import BCluster


def valid_sequence(
    *, cluster: BCluster, avoid: frozenset[str], moves: list[tuple[int, int, int]]
) -> bool:
    """Whether `moves` (instance index, new primary, new secondary) can be carried
    out in order, each keeping the rules (what the tests hold a plan to; the
    folding pass checks only what a fold changes, with `check_plan_move`)."""
    work = Work(cluster, avoid)
    for i, new_p, new_s in moves:
        if check_plan_move(work, i, new_p, new_s) is None:
            return False
        work.apply(i, new_p, new_s)
    return True


def check_plan_move(work: Work, i: int, new_p: int, new_s: int) -> MoveKind | None:
    """`check_move`, and for a pair of two new nodes a relocation: replace the
    secondary by new_p and fail over to it (a replace-and-failover), then replace
    the secondary by new_s (a replace-secondary), each step keeping every rule.
    What a plan's moves may be; the search itself tries single kinds only."""
    kind = check_move(work, i, new_p, new_s)
    if kind is not None:
        return kind
    p, s = work.p[i], work.s[i]
    if new_p == new_s or {new_p, new_s} & {p, s}:
        return None
    if check_move(work, i, new_p, p) is not MoveKind.REPLACE_AND_FAILOVER:
        return None
    work.apply(i, new_p, p)
    try:
        second = check_move(work, i, new_p, new_s)
    finally:
        work.apply(i, p, s)
    return MoveKind.RELOCATE if second is MoveKind.REPLACE_SECONDARY else None


def check_move(work: Work, i: int, new_p: int, new_s: int) -> MoveKind | None:
    """The kind of a single move from the instance's placement to (new_p, new_s)
    if one exists and it keeps every rule, else None."""
    p, s = work.p[i], work.s[i]
    if new_p == new_s:
        return None
    if (new_p, new_s) == (s, p):
        kind = MoveKind.FAILOVER
    elif new_p == p and new_s != s:
        kind = MoveKind.REPLACE_SECONDARY
    elif new_p == s and new_s != p:
        kind = MoveKind.FAILOVER_AND_REPLACE
    elif new_s == p and new_p != s:
        kind = MoveKind.REPLACE_AND_FAILOVER
    elif new_s == s and new_p != p:
        kind = MoveKind.REPLACE_PRIMARY
    else:
        return None
    inst = work.insts[i]
    mem, res, dsk = inst.mem, inst.res, inst.dsk
    w = work
    gains_pri = new_p != p
    holders_new = {new_p, new_s} - {p, s}
    for k in holders_new:
        if not w.usable[k] or w.f_dsk[k] < dsk:
            return None
    if gains_pri:
        if not w.usable[new_p]:
            return None
        if w.c_free[new_p] < mem or w.all_vcpus[new_p] + inst.all_vcpus > w.vcpu_limit[new_p]:
            return None
        if w.tags_clash(i, new_p):
            return None
    if {new_p, new_s} != {p, s} and w.has_locs and w.locs[new_p] & w.locs[new_s]:
        return None
    # corral's replace checks: the replace's primary keeps N+1 with the instance.
    if (
        kind in (MoveKind.REPLACE_SECONDARY, MoveKind.REPLACE_AND_FAILOVER)
        and w.online[p]
        and w.r_mem[p] > w.c_free[p]
    ):
        return None
    if kind is MoveKind.REPLACE_PRIMARY:
        if not w.usable[s] or w.all_vcpus[s] + inst.all_vcpus > w.vcpu_limit[s]:
            return None
        if w.tags_clash(i, s):  # the temporary primary
            return None
        if w.new_r(s, p, res, -1, 0) > w.c_free[s] - mem:
            return None
        if max(w.r_mem[new_p], w.rows[new_p].get(s, 0) + res) > w.c_free[new_p]:
            return None
    # every node that takes something keeps N+1 afterwards
    trial = _Trial(w, i, new_p, new_s)
    return kind if trial.ok else None


class _Trial:
    """Applies a move to copies of the touched nodes' constraint figures."""

    def __init__(self, w: Work, i: int, new_p: int, new_s: int) -> None:
        inst = w.insts[i]
        p, s = w.p[i], w.s[i]
        touched = {p, s, new_p, new_s}
        c_free = {k: w.c_free[k] for k in touched}
        rows = {k: dict(w.rows[k]) for k in touched}
        c_free[p] += inst.mem
        c_free[new_p] -= inst.mem
        rows[s][p] = rows[s].get(p, 0) - inst.res
        rows[new_s][new_p] = rows[new_s].get(new_p, 0) + inst.res
        gainers = (
            {new_p, new_s}
            - ({p} if new_p == p else set())
            - ({s} if (new_s == s and new_p == p) else set())
        )
        if new_s == s and new_p != p:
            gainers.add(s)  # its reservation moves to another peer
        self.ok = all(
            not w.online[k] or max(rows[k].values(), default=0) <= c_free[k] for k in gainers
        )
