"""What one balance plan looks like to a user: planning a cluster on the cores
with timing (`plan_cluster`), the `--json` document and the text report, shared
by the offline (`balance`) and live (`balance_live`) paths. Must not read etcd or
touch nodes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.cli.context import (
    UsageError,
    print_json,
    size,
)
from reactors.balance.cores import plan_on_cores
from reactors.balance.explain import held_back, pinned
from reactors.balance.plan import (
    BalancePlan,
    Move,
)
from reactors.balance.rounds import rounds
from reactors.htools.model import BCluster
from reactors.htools.text import render


@dataclass(frozen=True, slots=True)
class Took:
    """How long planning took, how many searches ran in worker processes and
    how those were started ("fork", "spawn"; None: no worker)."""

    seconds: float
    in_workers: int
    started_by: str | None = None

    def __str__(self) -> str:
        where = f", {self.in_workers + 1} processes" if self.in_workers else ""
        return f"{self.seconds:.2f}s{where}"


def plan_cluster(
    cluster: BCluster, args: argparse.Namespace, *, avoid: frozenset[str]
) -> tuple[BalancePlan, Took]:
    started = time.monotonic()
    try:
        planned = plan_on_cores(
            cluster=cluster,
            max_moves=args.max_moves,
            min_gain=args.min_gain,
            avoid=avoid,
            lookahead=args.lookahead,
            prefer=args.prefer,
            search_set=args.searches,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    plan = planned.plan
    took = Took(
        seconds=time.monotonic() - started,
        in_workers=planned.in_workers,
        started_by=planned.started_by,
    )
    if args.write_htools is not None:
        try:
            args.write_htools.write_text(render(plan.cluster_after))
        except OSError as exc:
            raise UsageError(
                f"--write-htools: cannot write {args.write_htools}: {exc.strerror}"
            ) from exc
    return plan, took


def plan_doc(plan: BalancePlan, took: Took) -> dict[str, Any]:
    return {
        "score_before": round(plan.score_before, 8),
        "score_after": round(plan.score_after, 8),
        "moves": [
            {**asdict(m), "kind": m.kind.value, "score_after": round(m.score_after, 8)}
            for m in plan.moves
        ],
        "moves_as_hbal": plan.moves_as_hbal,
        "data_moved_mib": plan.data_mib,
        "migrations": plan.migrations,
        "rounds": len(rounds(plan.moves)),
        "n1_failures_before": list(plan.n1_failures_before),
        "n1_failures_after": list(plan.n1_failures_after),
        "stopped_by": plan.stopped_by,
        "searches": plan.searches,
        "prefer": plan.prefer,
        "search": plan.search,
        "dropped": [
            {
                "search": d.search,
                "score_after": round(d.score_after, 8),
                "moves": d.moves,
                "moves_as_hbal": d.moves_as_hbal,
                "data_moved_mib": d.data_mib,
                "migrations": d.migrations,
            }
            for d in plan.dropped
        ],
        "candidates_scored": plan.candidates_scored,
        "seconds": round(took.seconds, 3),
        "searches_in_workers": took.in_workers,
        "workers_started_by": took.started_by,
    }


def _move_line(n: int, m: Move) -> str:
    data = f"{size(m.data_mib)} copied" if m.data_mib else "no data"
    return (
        f"{n:>4}. {m.instance} {m.old_primary}:{m.old_secondary} => "
        f"{m.new_primary}:{m.new_secondary}  {m.kind.value}, {data}, "
        f"score {m.score_after:.8f}"
    )


def _as_hbal(plan: BalancePlan) -> str:
    """A note when relocations make the plan shorter than hbal would count it."""
    if plan.moves_as_hbal == len(plan.moves):
        return ""
    return f" ({plan.moves_as_hbal} as hbal counts them: a relocation is two)"


def explanation_doc(plan: BalancePlan, *, avoid: frozenset[str]) -> dict[str, Any]:
    """Why instances stay where they are once the plan is done."""
    after = plan.cluster_after
    return {
        "pinned": [asdict(x) for x in pinned(after)],
        "held_back": [
            {**asdict(h), "kind": h.kind.value, "gain": round(h.gain, 8)}
            for h in held_back(after, avoid=avoid)
        ],
    }


# how many instances of each kind the text report names
_NAMED = 12


def report_explanation(plan: BalancePlan, *, avoid: frozenset[str]) -> None:
    """The instances left where they are, and why: never moved (by reason), or
    held back by a rule although a move would lower the score."""
    after = plan.cluster_after
    still = pinned(after)
    reasons: dict[str, list[str]] = {}
    for x in still:
        reasons.setdefault(x.why, []).append(x.instance)
    for why, names in sorted(reasons.items()):
        more = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
        print(f"not moved, {why}: {len(names)}: {', '.join(names[:_NAMED])}{more}")
    held = held_back(after, avoid=avoid)
    print(
        f"left where they are: {len(still)} never moved, {len(held)} held back by a rule; "
        "every other instance has no move left that lowers the score"
    )
    if held:
        print(
            f"held back by a rule ({len(held)} instances whose best move would lower "
            "the score but breaks N+1, memory, disk or a policy):"
        )
    for h in held[:_NAMED]:
        print(
            f"  {h.instance} stays on {h.primary}:{h.secondary}: {h.kind.value} to "
            f"{h.new_primary}:{h.new_secondary} would gain {h.gain:.4f}, but {h.why}"
        )
    if len(held) > _NAMED:
        print(f"  ... and {len(held) - _NAMED} more")


def report_plan(
    plan: BalancePlan, took: Took, args: argparse.Namespace, *, avoid: frozenset[str] = frozenset()
) -> None:
    if args.json:
        doc = plan_doc(plan, took)
        if getattr(args, "explain", False):
            doc |= explanation_doc(plan, avoid=avoid)
        print_json(doc)
        return
    for n, m in enumerate(plan.moves, 1):
        print(_move_line(n, m))
    print(
        f"cluster score {plan.score_before:.8f} -> {plan.score_after:.8f} in "
        f"{len(plan.moves)} moves{_as_hbal(plan)} ({len(rounds(plan.moves))} rounds), "
        f"{size(plan.data_mib) if plan.data_mib else 'no'} data copied, "
        f"{plan.migrations} live migrations; planned in {took} ({plan.stopped_by})"
    )
    if plan.dropped:
        why = {
            "budget": "it ends lowest in no more moves than the greedy plan",
            "moves": "the fewest moves ending no higher than the greedy plan",
            "score": "it ends lowest",
        }[plan.prefer]
        print(
            f"kept: {plan.search} ({why}: --prefer {plan.prefer}), "
            f"of the {plan.searches} set of searches"
        )
    for d in plan.dropped:
        print(
            f"  also planned, {d.search}: score {d.score_after:.8f} in {d.moves} moves "
            f"({d.moves_as_hbal} as hbal counts them), "
            f"{size(d.data_mib) if d.data_mib else 'no'} data copied, "
            f"{d.migrations} live migrations"
        )
    if plan.n1_failures_after:
        print(f"N+1 still failing on: {', '.join(plan.n1_failures_after)}")
    report_explanation(plan, avoid=avoid)
