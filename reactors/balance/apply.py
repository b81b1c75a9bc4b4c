"""Which corral jobs make up each move of a balance plan (which moves can run at
the same time is `reactors.balance.rounds`'s).

Within a move the jobs run one after another:
a live migration is `instance.migrate` (primary and secondary swap); a change of
secondary is `instance.replace-disks` with mode `change-secondary` and the new
node.

Pure: no I/O, no logging, no asyncio; it submits nothing.
"""

from __future__ import annotations

from events.model import JobKind
from reactors.balance.moves import Move, StepKind


def job_steps(move: Move) -> tuple[tuple[JobKind, dict[str, str]], ...]:
    """The jobs (kind, params), in order, that carry `move` out."""
    out: list[tuple[JobKind, dict[str, str]]] = []
    for step in move.steps():
        if step.kind is StepKind.MIGRATE:
            out.append((JobKind.INSTANCE_MIGRATE, {}))
        else:
            assert step.node is not None
            out.append(
                (JobKind.INSTANCE_REPLACE_DISKS, {"mode": "change-secondary", "node": step.node})
            )
    return tuple(out)
