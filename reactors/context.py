"""The reactors' shared view of the cluster: the folded ClusterState kept current by
one subscription to the event log (on standbys too), read-your-writes appends
guarded by the leader's term, wake-ups for the keys each new event touches, and
the clocks: wall time for events, and the loop watch's stall-free monotonic time
for judging health.

Does no planning and no node I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from events.ids import InstanceName, NodeName
from events.loading import follow_batches
from events.model import Event, Stamp, stamp
from events.state import ClusterState
from events.store import MAX_TXN_OPS, NotLeader
from reactors.plans.seen import instances_on
from reactors.seams import EventLog, NodeOps
from reactors.stalls import LoopWatch

log = structlog.get_logger("corral.reactors")

# Seconds an acknowledged write of this process may take to reach its own fold
# before the subscription is presumed silent (a resubscription costs one read).
FOLD_PATIENCE_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactorSettings:
    actor: str = "reactor"
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 5.0
    resync_interval_s: float = 5.0
    # Every resync asks each instance for a pass; one whose inputs are those of
    # its last converged pass skips it (`reactors.plans.inputs`). At this interval
    # every instance is planned again whatever its inputs.
    full_resync_interval_s: float = 60.0
    # Reconcile passes at once (each waits on a node most of its time): at 64,
    # 1,000 new instances converged in waves of 64.
    max_parallel_instances: int = 256
    step_backoff_max_s: float = 30.0
    fence_retry_max_s: float = 30.0
    # None: take suspect/lost timeouts from the cluster policy in the event log.
    suspect_timeout_s: float | None = None
    lost_timeout_s: float | None = None
    # The leader's lease: a standby takes over at most this long after the
    # leader stops renewing it.
    lease_ttl_s: int = 5
    # Nodes fenced at once (safety rule 7: one at a time by default).
    fence_at_once: int = 1
    # Lateness of the event loop above which the orchestrator counts as stalled.
    stall_threshold_s: float = 0.25


@dataclass
class ReactorContext:
    log_store: EventLog
    nodes: NodeOps
    settings: ReactorSettings
    state: ClusterState
    clock: Callable[[], float] = time.time
    watch: LoopWatch = field(default_factory=LoopWatch)
    # The leader's term while this process leads (every append compares it);
    # None on a standby, whose reactors do not run.
    term: int | None = None
    # This orchestrator's id among the cluster's: reactor events name it in their
    # actor (`reactor@<member>`), so the log says which orchestrator wrote what.
    member: str = ""
    # Called when an append finds the term over (the engine ends the term).
    on_not_leader: Callable[[NotLeader], None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _listeners: list[Callable[[Event, ClusterState], None]] = field(default_factory=list)
    _term_listeners: list[Callable[[Event, ClusterState], None]] = field(default_factory=list)
    stopping: bool = False
    _pending: list[tuple[list[Event], int, asyncio.Future[int]]] = field(default_factory=list)
    _flushing: set[asyncio.Task[None]] = field(default_factory=set)
    # Set when this process's own acknowledged write does not reach its fold in
    # time: the subscription is dropped and made again (events.loading).
    _stale: asyncio.Event = field(default_factory=asyncio.Event)

    # ----------------------------------------------------------------- events in

    async def follow(self) -> None:
        """Fold every new event into `state`, forever (the one subscription),
        a batch of those that arrived together at a time."""
        async for events, state in follow_batches(self.log_store, self.state, stale=self._stale):
            self.state = state
            for event in events:
                for listener in [*self._listeners, *self._term_listeners]:
                    listener(event, state)
            async with self._changed:
                self._changed.notify_all()
            if self.stopping:
                return

    def on_event(self, listener: Callable[[Event, ClusterState], None]) -> None:
        self._listeners.append(listener)

    def on_event_this_term(self, listener: Callable[[Event, ClusterState], None]) -> None:
        """A listener of one term's reactors, dropped when the term ends."""
        self._term_listeners.append(listener)

    def begin_term(self, term: int) -> None:
        self.term = term

    def end_term(self) -> None:
        self.term = None
        self._term_listeners.clear()

    async def wait_revision(self, revision: int, *, timeout: float = 30.0) -> None:
        """Read-your-writes: return once the fold has caught up with `revision`.
        A write of ours etcd acknowledged and the fold has not seen after
        `FOLD_PATIENCE_S` means a silent subscription: it is made again."""
        # The deadlines run in this task (asyncio.timeout), not in a task of their
        # own (asyncio.wait_for): a waiter cancelled twice (its deadline, then its
        # term's end) could leave that inner task holding the lock for ever after
        # this one let it go, and every later `async with` (the fold's own) stuck.
        patience = min(FOLD_PATIENCE_S, timeout)
        async with self._changed:
            try:
                async with asyncio.timeout(patience):
                    await self._changed.wait_for(lambda: self.state.revision >= revision)
                return
            except TimeoutError:
                if timeout <= patience:
                    raise
            log.warning(
                "fold behind an acknowledged write; subscribing again",
                revision=revision,
                folded=self.state.revision,
            )
            self._stale.set()
            async with asyncio.timeout(timeout - patience):
                await self._changed.wait_for(lambda: self.state.revision >= revision)

    async def wait_change(self, *, timeout: float) -> None:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()

    # ---------------------------------------------------------------- events out

    async def append(
        self,
        events: Sequence[Event],
        *,
        expected: Mapping[str, int] | None = None,
        wait: bool = True,
    ) -> int:
        """Reactor appends: guarded by the term (NotLeader once it is over)."""
        if self.term is None:
            raise NotLeader(0, 0)
        try:
            if expected:
                revision = await self.log_store.append(events, expected=expected, term=self.term)
            else:
                revision = await self._batched(list(events), self.term)
        except NotLeader as exc:
            if self.on_not_leader is not None:
                self.on_not_leader(exc)
            raise
        if wait:
            await self.wait_revision(revision)
        return revision

    async def _batched(self, events: list[Event], term: int) -> int:
        """Appends without expected versions made in one turn of the event loop
        (the steps of a reconcile pass, of every instance reconciled at once) go
        to etcd in one transaction, each call whole in one of them and every one
        guarded by the same term: dozens of instances' StepStarted cost one round
        trip, not dozens."""
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((events, term, waiter))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush_appends)
        return await waiter

    def _flush_appends(self) -> None:
        pending, self._pending = self._pending, []
        groups: list[list[tuple[list[Event], int, asyncio.Future[int]]]] = []
        ops = 0
        for item in pending:
            events, term, _ = item
            cost = len(events) + len({k for e in events for k in e.objects()}) + 2
            if not groups or groups[-1][0][1] != term or ops + cost > MAX_TXN_OPS:
                groups.append([])
                ops = 0
            groups[-1].append(item)
            ops += cost
        for group in groups:
            task = asyncio.get_running_loop().create_task(self._append_group(group))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _append_group(
        self, group: list[tuple[list[Event], int, asyncio.Future[int]]]
    ) -> None:
        events = [e for evs, _, _ in group for e in evs]
        try:
            revision = await self.log_store.append(events, term=group[0][1])
        except BaseException as exc:
            for _, _, waiter in group:
                if not waiter.done():
                    waiter.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for _, _, waiter in group:
            if not waiter.done():
                waiter.set_result(revision)

    async def confirm_term(self) -> None:
        """NotLeader unless this term still leads, confirmed by a quorum of etcd
        (before an action no event precedes, such as a fence agent's retry)."""
        if self.term is None:
            raise NotLeader(0, 0)
        try:
            await self.log_store.confirm_term(self.term)
        except NotLeader as exc:
            if self.on_not_leader is not None:
                self.on_not_leader(exc)
            raise

    @property
    def actor(self) -> str:
        return f"{self.settings.actor}@{self.member}" if self.member else self.settings.actor

    def now(self) -> float:
        return self.clock()

    def stamp(self) -> Stamp:
        """id, time and actor for an event these reactors write now."""
        return stamp(actor=self.actor, time=self.now())

    def trusted_now(self) -> float:
        """Monotonic time with the orchestrator's own stalls taken out: node health
        is judged on it (safety rule 9)."""
        return self.watch.trusted_now()

    def suspect_timeout(self) -> float:
        return self.settings.suspect_timeout_s or self.state.desired.policy.suspect_timeout_s

    def lost_timeout(self) -> float:
        return self.settings.lost_timeout_s or self.state.desired.policy.lost_timeout_s


def instances_touching_node(state: ClusterState, node: NodeName) -> set[InstanceName]:
    """Instances placed on `node`, plus any whose leftovers the node reports."""
    return instances_on(state, node)
