"""A node transport for reactors under test that decide and write but must never
reach a node: a probe finds the node unreachable, a step or a fence fails the test."""

from __future__ import annotations

from typing import NoReturn

from events.ids import NodeName
from reactors.plans.steps import Step
from reactors.seams import NodeUnreachable


class NoNodes:
    """The reactors under test here decide and write; none reaches a node."""

    async def probe(self, node: NodeName) -> NoReturn:
        raise NodeUnreachable(node)

    async def execute(self, step: Step) -> NoReturn:
        raise AssertionError(f"no node command expected: {step.summary}")

    async def fence(self, node: NodeName, spec: object, action: str) -> NoReturn:
        raise AssertionError("no fence expected")

    def set_term(self, term: int) -> None:
        pass

    async def close(self) -> None:
        pass


NO_NODES = NoNodes()
