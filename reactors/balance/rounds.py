"""Which moves of a balance plan can run at the same time: moves that touch
disjoint sets of nodes commute (a move's rules only look at the nodes it
touches), so a move may run in the first round after every earlier move it
shares a node with; rounds are the layers of that order, and every move of a
round can run in parallel.

Pure: no I/O, no logging, no asyncio (and none of the event model: the offline `corral
balance --plan --htools` counts rounds without it).
"""

from __future__ import annotations

from collections.abc import Sequence

from reactors.balance.moves import Move


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
