"""The two seams the reactors act through, as Protocols: the event log (append,
read, subscribe) and the node operations (probe a node, carry out one planned
step, run a fence agent, drive a live migration). Concrete classes live in
`events.store` and `reactors.nodes.ssh_ops`; tests use the same concrete classes
against a real etcd and simulated nodes.

Holds no logic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from events.ids import NodeName
from events.model import DrbdResourceObs, Event, NodeFacts, VmObs, VolumeObs
from events.specs import FenceSpec
from reactors.plans.steps import Step


class EventLog(Protocol):
    async def append(
        self,
        events: Sequence[Event],
        *,
        expected: Mapping[str, int] | None = None,
        term: int | None = None,
    ) -> int: ...

    async def confirm_term(self, term: int) -> None: ...

    def subscribe(self, from_revision: int) -> AsyncIterator[tuple[int, Event]]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSnapshot:
    """One combined probe of a node."""

    facts: NodeFacts
    volumes: tuple[VolumeObs, ...]
    drbd: tuple[DrbdResourceObs, ...]
    vms: tuple[VmObs, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutcome:
    ok: bool
    command: str  # summary of what ran, never secrets
    duration_s: float
    error: str = ""


class NodeUnreachable(Exception):
    """The node did not answer (connection refused, timed out, host key, auth)."""


class NodeOps(Protocol):
    async def probe(self, node: NodeName) -> NodeSnapshot: ...

    async def execute(self, step: Step) -> StepOutcome: ...

    async def fence(self, node: NodeName, spec: FenceSpec, action: str) -> tuple[int, str]: ...

    def set_term(self, term: int) -> None:
        """The leader's term, which mutating node commands carry from now on."""

    async def close(self) -> None: ...
