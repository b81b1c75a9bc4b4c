"""The balancer's vocabulary: the move kinds, the operations a move is made of
(`MoveStep`), one planned move (`Move`), the whole plan (`BalancePlan`) and the
figures of a plan not kept (`PlanSummary`), with
how many live migrations each kind takes.

Pure: no I/O, no logging, no asyncio; plain frozen values, nothing here plans or
scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reactors.htools.model import BCluster


class MoveKind(StrEnum):
    FAILOVER = "failover"
    REPLACE_SECONDARY = "replace-secondary"
    FAILOVER_AND_REPLACE = "failover-and-replace"
    REPLACE_AND_FAILOVER = "replace-and-failover"
    REPLACE_PRIMARY = "replace-primary"
    # both copies to new nodes: the secondary is replaced by the new primary, the
    # instance fails over to it, then the secondary is replaced again; the search
    # never proposes it, the folding pass makes it of two moves of one instance
    RELOCATE = "relocate"


class StepKind(StrEnum):
    """The operations a move is made of, in order: a live migration (primary and
    secondary swap) or a change of secondary to a named node."""

    MIGRATE = "migrate"
    REPLACE_SECONDARY = "replace-secondary"


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveStep:
    kind: StepKind
    node: str | None = None  # the new secondary of a REPLACE_SECONDARY


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    """One instance move; `score_after` is the cluster score once it (and every
    earlier move of the plan) is done."""

    instance: str
    kind: MoveKind
    old_primary: str
    old_secondary: str
    new_primary: str
    new_secondary: str
    data_mib: int
    migrations: int
    score_after: float

    @property
    def as_hbal(self) -> int:
        """How many of hbal's moves this is: hbal has no move that takes both
        copies to new nodes, so a relocation is two of them."""
        return HBAL_MOVES[self.kind]

    @property
    def nodes(self) -> frozenset[str]:
        return frozenset(
            (self.old_primary, self.old_secondary, self.new_primary, self.new_secondary)
        )

    def steps(self) -> tuple[MoveStep, ...]:
        """The operations, in order, that carry the move out."""
        mig = MoveStep(kind=StepKind.MIGRATE)
        if self.kind is MoveKind.FAILOVER:
            return (mig,)
        if self.kind is MoveKind.REPLACE_SECONDARY:
            return (MoveStep(kind=StepKind.REPLACE_SECONDARY, node=self.new_secondary),)
        if self.kind is MoveKind.FAILOVER_AND_REPLACE:
            return (mig, MoveStep(kind=StepKind.REPLACE_SECONDARY, node=self.new_secondary))
        if self.kind is MoveKind.REPLACE_AND_FAILOVER:
            return (MoveStep(kind=StepKind.REPLACE_SECONDARY, node=self.new_primary), mig)
        if self.kind is MoveKind.RELOCATE:
            return (
                MoveStep(kind=StepKind.REPLACE_SECONDARY, node=self.new_primary),
                mig,
                MoveStep(kind=StepKind.REPLACE_SECONDARY, node=self.new_secondary),
            )
        return (mig, MoveStep(kind=StepKind.REPLACE_SECONDARY, node=self.new_primary), mig)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSummary:
    """The figures of a plan that was made and not kept (`BalancePlan.dropped`),
    so a user can see what the other search would have done."""

    search: str
    score_after: float
    moves: int
    moves_as_hbal: int
    data_mib: int
    migrations: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BalancePlan:
    moves: tuple[Move, ...]
    score_before: float
    score_after: float
    data_mib: int
    migrations: int
    n1_failures_before: tuple[str, ...]
    n1_failures_after: tuple[str, ...]
    cluster_after: BCluster
    candidates_scored: int
    stopped_by: str
    # the search whose plan this is: "greedy", "lookahead K", "pairs K",
    # "frugal", or one of the last three followed by ", cut at the greedy
    # score" (`plan_balance` says which it keeps)
    search: str = "greedy"
    # the other searches' plans, made and not kept
    dropped: tuple[PlanSummary, ...] = ()
    # the set of searches that planned ("full", "quick" or "greedy":
    # `reactors.balance.plan.which_searches`)
    searches: str = "greedy"
    # the rule this plan was kept by ("budget", "moves" or "score":
    # `reactors.balance.plan.which_prefer`)
    prefer: str = "budget"

    @property
    def moves_as_hbal(self) -> int:
        """The plan's length in hbal's moves (`Move.as_hbal`)."""
        return sum(m.as_hbal for m in self.moves)

    def placements(self) -> dict[str, tuple[str, str | None]]:
        """Instance -> (primary, secondary) once every move is done."""
        return {i.name: (i.pnode, i.snode) for i in self.cluster_after.instances}

    def summary(self) -> PlanSummary:
        """This plan's figures (for when another one is kept)."""
        return PlanSummary(
            search=self.search,
            score_after=self.score_after,
            moves=len(self.moves),
            moves_as_hbal=self.moves_as_hbal,
            data_mib=self.data_mib,
            migrations=self.migrations,
        )


# Live migrations each kind takes; the kinds' order breaks ties between otherwise
# equal candidates.
MIGRATIONS = {
    MoveKind.FAILOVER: 1,
    MoveKind.REPLACE_SECONDARY: 0,
    MoveKind.FAILOVER_AND_REPLACE: 1,
    MoveKind.REPLACE_AND_FAILOVER: 1,
    MoveKind.REPLACE_PRIMARY: 2,
    MoveKind.RELOCATE: 1,
}
# Disk copies each kind makes (a failover makes none).
COPIES = {kind: 0 if kind is MoveKind.FAILOVER else 1 for kind in MoveKind} | {MoveKind.RELOCATE: 2}
KIND_ORDER = {k: n for n, k in enumerate(MoveKind)}
# How many of hbal's moves each kind is (`Move.as_hbal`).
HBAL_MOVES = {kind: 2 if kind is MoveKind.RELOCATE else 1 for kind in MoveKind}
