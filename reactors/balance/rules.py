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


def move_kind(work: Work, i: int, new_p: int, new_s: int) -> MoveKind | None:
    """The single move kind that takes the instance from its placement to
    (new_p, new_s), or None when there is none."""
    p, s = work.p[i], work.s[i]
    if new_p == new_s:
        return None
    if (new_p, new_s) == (s, p):
        return MoveKind.FAILOVER
    if new_p == p and new_s != s:
        return MoveKind.REPLACE_SECONDARY
    if new_p == s and new_s != p:
        return MoveKind.FAILOVER_AND_REPLACE
    if new_s == p and new_p != s:
        return MoveKind.REPLACE_AND_FAILOVER
    if new_s == s and new_p != p:
        return MoveKind.REPLACE_PRIMARY
    return None


def check_move(work: Work, i: int, new_p: int, new_s: int) -> MoveKind | None:
    """The kind of a single move from the instance's placement to (new_p, new_s)
    if one exists and it keeps every rule, else None."""
    kind = move_kind(work, i, new_p, new_s)
    if kind is None or refusal(work, i, new_p, new_s) is not None:
        return None
    return kind


def refusal(work: Work, i: int, new_p: int, new_s: int) -> str | None:
    """Which rule the single move to (new_p, new_s) breaks, in words (None:
    it keeps them all). The move must be one (`move_kind`)."""
    w = work
    p, s = w.p[i], w.s[i]
    kind = move_kind(w, i, new_p, new_s)
    inst = w.insts[i]
    gains_pri = new_p != p
    for k in sorted({new_p, new_s} - {p, s}):
        why = _taker_refusal(w, k, dsk=inst.dsk, su=inst.su)
        if why is not None:
            return why
    if gains_pri:
        if not w.usable[new_p]:
            return f"{w.names[new_p]} takes nothing (offline, drained or avoided)"
        why = _primary_room(w, i, new_p)
        if why is not None:
            return why
    if {new_p, new_s} != {p, s} and w.has_locs and w.locs[new_p] & w.locs[new_s]:
        shared = ", ".join(sorted(w.locs[new_p] & w.locs[new_s]))
        return f"policy: {w.names[new_p]} and {w.names[new_s]} share failure domain {shared}"
    # corral's replace checks: the replace's primary keeps N+1 with the instance.
    if (
        kind in (MoveKind.REPLACE_SECONDARY, MoveKind.REPLACE_AND_FAILOVER)
        and w.online[p]
        and w.r_mem[p] > w.c_free[p]
    ):
        return _n1(w, p, w.r_mem[p], w.c_free[p])
    if kind is MoveKind.REPLACE_PRIMARY:
        why = _temporary_primary_refusal(w, i, new_p)
        if why is not None:
            return why
    # every node that takes something keeps N+1 afterwards
    return _Trial(w, i, new_p, new_s).refusal


def _taker_refusal(w: Work, k: int, *, dsk: int, su: int) -> str | None:
    """What stops node `k` taking a new copy of `dsk` MiB and `su` spindles."""
    if not w.usable[k]:
        return f"{w.names[k]} takes nothing (offline, drained or avoided)"
    if w.f_dsk[k] < dsk:
        return f"{w.names[k]} has {w.f_dsk[k]}M disk free for its {dsk}M"
    if w.ispind[k] + su > w.spin_cap[k]:
        return (
            f"policy: {w.names[k]} would exceed its spindle ratio "
            f"({w.ispind[k] + su} spindles used, at most {w.sden[k]:g})"
        )
    return None


def _temporary_primary_refusal(w: Work, i: int, new_p: int) -> str | None:
    """What stops a replace-primary of instance `i` to `new_p`: its secondary
    runs it meanwhile (usable, room, N+1 without the old primary's reservation),
    and `new_p` keeps N+1 with the secondary as a peer."""
    p, s = w.p[i], w.s[i]
    inst = w.insts[i]
    mem, res = inst.mem, inst.res
    if not w.usable[s]:
        return f"{w.names[s]} cannot be the temporary primary (offline, drained or avoided)"
    why = _primary_room(w, i, s, temporary=True)
    if why is not None:
        return why
    need = w.new_r(s, p, res, -1, 0)
    if need > w.c_free[s] - mem:
        return _n1(w, s, need, w.c_free[s] - mem)
    need = max(w.r_mem[new_p], w.rows[new_p].get(s, 0) + res)
    if need > w.c_free[new_p]:
        return _n1(w, new_p, need, w.c_free[new_p])
    return None


def _primary_room(w: Work, i: int, k: int, *, temporary: bool = False) -> str | None:
    inst = w.insts[i]
    as_what = "as the temporary primary" if temporary else ""
    if w.c_free[k] < inst.mem:
        return f"{w.names[k]} has {w.c_free[k]}M free for its {inst.mem}M {as_what}".rstrip()
    if w.all_vcpus[k] + inst.all_vcpus > w.vcpu_limit[k]:
        return (
            f"policy: {w.names[k]} would exceed its vCPU ratio "
            f"({w.all_vcpus[k] + inst.all_vcpus} vCPUs, at most {w.vcpu_limit[k]:g})"
        )
    if w.tags_clash(i, k):
        return f"policy: {w.names[k]} has a primary sharing its exclusion tag {as_what}".rstrip()
    return None


def _n1(w: Work, k: int, need: int, free: int) -> str:
    return f"N+1: {w.names[k]} would hold {need}M for a peer's failover with {free}M free"


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
        self.refusal: str | None = None
        for k in sorted(gainers):
            need = max(rows[k].values(), default=0)
            if w.online[k] and need > c_free[k]:
                self.refusal = _n1(w, k, need, c_free[k])
                break
