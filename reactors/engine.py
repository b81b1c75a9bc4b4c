"""The reactor engine: keeps the fold current (on standbys too), watches its own
event loop for stalls, keeps this process's lease alive, and campaigns; while this
process leads it runs one term's reactors (prober, placer, instance workers,
healer, job runner) and stops them the moment the term ends (lease lost, an append
refused by the term guard, a step-down), then campaigns again.

Holds no decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from events.election import read_leadership
from events.ids import NodeName
from events.state import ClusterState
from events.store import NotLeader
from reactors.context import ReactorContext, ReactorSettings
from reactors.ending import cancel_all
from reactors.healer import Healer
from reactors.jobs.runner import JobRunner
from reactors.leader import ELECTION_ERRORS, Leadership, TermNodes
from reactors.placer import Placer
from reactors.prober import Prober
from reactors.seams import EventLog, NodeOps
from reactors.workers import InstanceWorkers

log = structlog.get_logger("corral.engine")


@dataclass
class TermReactors:
    """One term's reactors and their tasks."""

    prober: Prober
    placer: Placer
    workers: InstanceWorkers
    healer: Healer
    jobs: JobRunner
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    node_tasks: dict[NodeName, asyncio.Task[None]] = field(default_factory=dict)

    async def stop(self) -> None:
        await cancel_all([*self.tasks, *self.node_tasks.values(), *self.jobs.tasks()])
        self.tasks.clear()
        self.node_tasks.clear()


@dataclass
class Engine:
    ctx: ReactorContext
    leadership: Leadership
    # Called with the seconds each reconcile pass took (the service feeds /metrics).
    on_reconcile: Callable[[float], None] | None = None
    # Called with each new term (the service feeds /metrics).
    on_term: Callable[[int | None], None] | None = None
    reactors: TermReactors | None = None
    # Per term this process led: wall time it began, and when its first reconcile
    # pass ended (the end of a handover, logged as "first reconcile of the term").
    term_began: dict[int, float] = field(default_factory=dict)
    first_reconciles: dict[int, float] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _leading: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(
        cls,
        *,
        log_store: EventLog,
        nodes: NodeOps,
        state: ClusterState,
        leadership: Leadership,
        settings: ReactorSettings | None = None,
    ) -> Engine:
        settings = settings or ReactorSettings()
        ctx = ReactorContext(
            log_store=log_store,
            nodes=TermNodes(inner=nodes, leadership=leadership),
            settings=settings,
            state=state,
            member=leadership.member.id,
        )
        ctx.watch.threshold_s = settings.stall_threshold_s
        ctx.on_not_leader = lambda exc: leadership.end_term(str(exc), term_of=exc.term)
        return cls(ctx=ctx, leadership=leadership)

    # ------------------------------------------------------------ the process

    async def start(self) -> None:
        loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "follow": self.ctx.follow,
            "loop-watch": self.ctx.watch.run,
            "lease": self.leadership.keep_alive,
            "lead": self._lead,
        }
        for name, loop in loops.items():
            self._run_for_good(name, loop)
        log.info("engine started", revision=self.ctx.state.revision)

    def _run_for_good(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one of the process's loops, and run it again if it ever ends before
        the engine stops: a loop that died of an error nobody expected (the
        campaign, the keepalive, the fold) left a process that kept running and
        never led again, without a word."""
        task = asyncio.create_task(loop(), name=f"corral-{name}")
        self._tasks.append(task)

        def ended(task: asyncio.Task[None]) -> None:
            # A cancelled loop is one stopped on purpose (`stop`, or a test
            # killing the process's tasks); the CancelledErrors that come from
            # below (a gRPC channel closed under a call) are caught inside them.
            if self.ctx.stopping or task.cancelled():
                return
            error = task.exception()
            log.error(
                "process loop ended; starting it again",
                loop=name,
                error=f"{type(error).__name__}: {error}"[:300] if error else "returned",
            )
            with contextlib.suppress(ValueError):
                self._tasks.remove(task)
            asyncio.get_running_loop().call_later(1.0, self._again, name, loop)

        task.add_done_callback(ended)

    def _again(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if not self.ctx.stopping:
            self._run_for_good(name, loop)

    async def wait_leading(self, *, timeout: float = 30.0) -> int:
        """Wait until this process leads; its term."""
        await asyncio.wait_for(self._leading.wait(), timeout)
        assert self.ctx.term is not None
        return self.ctx.term

    @property
    def leading(self) -> bool:
        return self.reactors is not None and self.leadership.valid()

    async def stop(self) -> None:
        self.ctx.stopping = True
        await self._end_term()
        await cancel_all(self._tasks)
        self._tasks.clear()
        await self.leadership.close()
        await self.ctx.nodes.close()

    # ------------------------------------------------------------ terms

    async def _lead(self) -> None:
        """Campaign, lead one term, and campaign again, for the life of the
        process: an error in a term's start or end is logged and the term ended
        (its reactors stopped), never the campaign."""
        while not self.ctx.stopping:
            term = await self.leadership.acquire()
            failed = False
            try:
                await self._begin_term(term)
                why = await self.leadership.wait_lost()
                log.warning("no longer leading", term=term, reason=why)
            except Exception:
                log.exception("term failed; ending it", term=term)
                self.leadership.end_term("the term failed", term_of=term)
                failed = True
            finally:
                await self._end_term()
            if failed:
                await asyncio.sleep(1.0)  # not a tight loop of terms failing alike

    async def _begin_term(self, term: int) -> None:
        ctx = self.ctx
        ctx.begin_term(term)
        ctx.nodes.set_term(term)
        prober = Prober(ctx=ctx)
        placer = Placer(ctx=ctx)
        workers = InstanceWorkers(ctx=ctx, prober=prober, on_reconcile=self._reconciled(term))
        healer = Healer(ctx=ctx, prober=prober, placer=placer, on_isolated=self._isolated)
        jobs = JobRunner(ctx=ctx, prober=prober, placer=placer, workers=workers)
        ctx.on_event_this_term(workers.on_event)
        ctx.on_event_this_term(placer.on_event)
        ctx.on_event_this_term(jobs.on_event)
        r = TermReactors(prober=prober, placer=placer, workers=workers, healer=healer, jobs=jobs)
        loops = {
            "workers": workers.run(),
            "placer": placer.run(),
            "healer": healer.run(),
            "jobs": jobs.run(),
            "nodes": self._watch_nodes(r),
        }
        for name, coro in loops.items():
            r.tasks.append(asyncio.create_task(coro, name=f"corral-{name}"))
        self.reactors = r
        workers.mark_all()
        placer.wake()
        jobs.wake()
        self._leading.set()
        if self.on_term is not None:
            self.on_term(term)
        log.info("reactors running", term=term, revision=ctx.state.revision)

    def _reconciled(self, term: int) -> Callable[[float], None]:
        """The workers' per-pass callback for one term: notes and logs the term's
        first pass (when a new leader is really at work), then feeds `on_reconcile`."""
        self.term_began[term] = time.time()
        begun = time.monotonic()

        def reconciled(seconds: float) -> None:
            if term not in self.first_reconciles:
                self.first_reconciles[term] = time.time()
                log.info(
                    "first reconcile of the term",
                    term=term,
                    at=round(self.first_reconciles[term], 3),
                    after_s=round(time.monotonic() - begun, 3),
                )
            if self.on_reconcile is not None:
                self.on_reconcile(seconds)

        return reconciled

    async def _end_term(self) -> None:
        r, self.reactors = self.reactors, None
        self._leading.clear()
        self.ctx.end_term()
        if r is not None:
            await r.stop()
            if self.on_term is not None:
                try:
                    self.on_term(None)
                except Exception:
                    log.exception("term-end callback failed")

    async def _watch_nodes(self, r: TermReactors) -> None:
        """One probe loop per declared node; started and stopped as nodes come and go
        (looked at when the declared nodes change, and every second)."""
        loop = asyncio.get_running_loop()
        while not self.ctx.stopping:
            specs = self.ctx.state.desired.nodes
            declared = set(specs)
            for node in declared - set(r.node_tasks):
                r.node_tasks[node] = asyncio.create_task(
                    r.prober.run_node(node), name=f"corral-probe-{node}"
                )
            for node in set(r.node_tasks) - declared:
                r.node_tasks.pop(node).cancel()
            for node, task in list(r.node_tasks.items()):
                if task.done():
                    r.node_tasks.pop(node)
            # Woken by every fold; the fold keeps the map while no node changes.
            deadline = loop.time() + 1.0
            while self.ctx.state.desired.nodes is specs and loop.time() < deadline:
                await self.ctx.wait_change(timeout=deadline - loop.time())

    async def _isolated(self, reason: str) -> None:
        """The healer finds this leader cut off from most nodes: step down if
        another orchestrator could lead (it may see more), and stay out for a
        while so that it does."""
        try:
            _, members = await read_leadership(self.leadership.election.store)
        except ELECTION_ERRORS:
            return
        if any(m.id != self.leadership.member.id for m in members):
            hold_off = 3 * max(self.ctx.lost_timeout(), float(self.leadership.ttl_s))
            self.leadership.step_down(f"isolated: {reason}", hold_off_s=hold_off)

    # ------------------------------------------------------------ this term's reactors

    def _current(self) -> TermReactors:
        if self.reactors is None:
            raise NotLeader(0, 0)
        return self.reactors

    @property
    def prober(self) -> Prober:
        return self._current().prober

    @property
    def placer(self) -> Placer:
        return self._current().placer

    @property
    def workers(self) -> InstanceWorkers:
        return self._current().workers

    @property
    def healer(self) -> Healer:
        return self._current().healer

    @property
    def jobs(self) -> JobRunner:
        return self._current().jobs

    @property
    def state(self) -> ClusterState:
        return self.ctx.state
