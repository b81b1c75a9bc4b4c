"""The reactors' shared view of the cluster: the folded ClusterState kept current by
one subscription to the event log, read-your-writes appends, and wake-ups for the
keys each new event touches.

Does no planning and no node I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from events.ids import InstanceName, NodeName
from events.loading import follow_batches
from events.model import Event
from events.state import ClusterState
from reactors.plans.seen import instances_on
from reactors.seams import EventLog, NodeOps

log = structlog.get_logger("corral.reactors")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactorSettings:
    actor: str = "reactor"
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 5.0
    resync_interval_s: float = 5.0
    max_parallel_instances: int = 64
    step_backoff_max_s: float = 30.0
    fence_retry_max_s: float = 30.0
    # None: take suspect/lost timeouts from the cluster policy in the event log.
    suspect_timeout_s: float | None = None
    lost_timeout_s: float | None = None


@dataclass
class ReactorContext:
    log_store: EventLog
    nodes: NodeOps
    settings: ReactorSettings
    state: ClusterState
    clock: Callable[[], float] = time.time
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _listeners: list[Callable[[Event, ClusterState], None]] = field(default_factory=list)
    stopping: bool = False

    # ----------------------------------------------------------------- events in

    async def follow(self) -> None:
        """Fold every new event into `state`, forever (the one subscription),
        a batch of those that arrived together at a time."""
        async for events, state in follow_batches(self.log_store, self.state):
            self.state = state
            for event in events:
                for listener in list(self._listeners):
                    listener(event, state)
            async with self._changed:
                self._changed.notify_all()
            if self.stopping:
                return

    def on_event(self, listener: Callable[[Event, ClusterState], None]) -> None:
        self._listeners.append(listener)

    async def wait_revision(self, revision: int, *, timeout: float = 30.0) -> None:
        """Read-your-writes: return once the fold has caught up with `revision`."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.state.revision >= revision), timeout
            )

    async def wait_change(self, *, timeout: float) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass

    # ---------------------------------------------------------------- events out

    async def append(
        self,
        events: Sequence[Event],
        *,
        expected: Mapping[str, int] | None = None,
        wait: bool = True,
    ) -> int:
        revision = await self.log_store.append(events, expected=expected)
        if wait:
            await self.wait_revision(revision)
        return revision

    @property
    def actor(self) -> str:
        return self.settings.actor

    def now(self) -> float:
        return self.clock()

    def suspect_timeout(self) -> float:
        return self.settings.suspect_timeout_s or self.state.desired.policy.suspect_timeout_s

    def lost_timeout(self) -> float:
        return self.settings.lost_timeout_s or self.state.desired.policy.lost_timeout_s


def instances_touching_node(state: ClusterState, node: NodeName) -> set[InstanceName]:
    """Instances placed on `node`, plus any whose leftovers the node reports."""
    return instances_on(state, node)
