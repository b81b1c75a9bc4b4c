"""How a balance plan is carried out: which moves can run at the same time, and
which corral jobs make up each move.

Moves that touch disjoint sets of nodes commute (a move's rules only look at the
nodes it touches), so a move may run in the first round after every earlier move
it shares a node with: rounds are the layers of that order, and every move of a
round can run in parallel. Within a move the jobs run one after another:
a live migration is `instance.migrate` (primary and secondary swap); a change of
secondary is `instance.replace-disks` with mode `change-secondary` and the new
node.

Pure: no I/O, no logging, no asyncio; it submits nothing. Comes after
`reactors.balance_plan` (a `BalancePlan`); read by `corral balance --apply`, which
submits the jobs through `orchestrator.operations.submit_job`.
"""

from __future__ import annotations

from collections.abc import Sequence

from events.model import JobKind
from reactors.balance_plan import Move, StepKind


def rounds(moves: Sequence[Move]) -> tuple[tuple[Move, ...], ...]:
    """The moves in rounds: each move goes in the round after the last one holding
    an earlier move that shares a node with it; order within a round is the plan's."""
    layer_of_node: dict[str, int] = {}
    layers: list[list[Move]] = []
    for move in moves:
        layer = 1 + max((layer_of_node.get(n, -1) for n in move.nodes), default=-1)
        if layer == len(layers):
            layers.append([])
        layers[layer].append(move)
        for n in move.nodes:
            layer_of_node[n] = layer
    return tuple(tuple(layer) for layer in layers)


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
