"""The reactor engine: wires the shared context, the prober, the placer, the
instance workers, the healer and the job runner into one set of asyncio tasks, and
stops them cleanly.

Holds no decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog

from events.ids import NodeName
from events.state import ClusterState
from reactors.context import ReactorContext, ReactorSettings
from reactors.healer import Healer
from reactors.jobs import JobRunner
from reactors.placer import Placer
from reactors.prober import Prober
from reactors.seams import EventLog, NodeOps
from reactors.workers import InstanceWorkers

log = structlog.get_logger("corral.engine")


@dataclass
class Engine:
    ctx: ReactorContext
    prober: Prober
    placer: Placer
    workers: InstanceWorkers
    healer: Healer
    jobs: JobRunner
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _node_tasks: dict[NodeName, asyncio.Task[None]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        log_store: EventLog,
        nodes: NodeOps,
        state: ClusterState,
        settings: ReactorSettings | None = None,
    ) -> Engine:
        ctx = ReactorContext(
            log_store=log_store, nodes=nodes, settings=settings or ReactorSettings(), state=state
        )
        prober = Prober(ctx=ctx)
        placer = Placer(ctx=ctx)
        workers = InstanceWorkers(ctx=ctx, prober=prober)
        healer = Healer(ctx=ctx, prober=prober, placer=placer)
        jobs = JobRunner(ctx=ctx, prober=prober, placer=placer, workers=workers)
        ctx.on_event(workers.on_event)
        ctx.on_event(placer.on_event)
        ctx.on_event(jobs.on_event)
        return cls(ctx=ctx, prober=prober, placer=placer, workers=workers, healer=healer, jobs=jobs)

    async def start(self) -> None:
        loops = {
            "follow": self.ctx.follow(),
            "workers": self.workers.run(),
            "placer": self.placer.run(),
            "healer": self.healer.run(),
            "jobs": self.jobs.run(),
            "nodes": self._watch_nodes(),
        }
        for name, coro in loops.items():
            self._tasks.append(asyncio.create_task(coro, name=f"corral-{name}"))
        self.workers.mark_all()
        self.placer.wake()
        self.jobs.wake()
        log.info("engine started", revision=self.ctx.state.revision)

    async def _watch_nodes(self) -> None:
        """One probe loop per declared node; started and stopped as nodes come and go."""
        while not self.ctx.stopping:
            declared = set(self.ctx.state.desired.nodes)
            for node in declared - set(self._node_tasks):
                self._node_tasks[node] = asyncio.create_task(
                    self.prober.run_node(node), name=f"corral-probe-{node}"
                )
            for node in set(self._node_tasks) - declared:
                self._node_tasks.pop(node).cancel()
            for node, task in list(self._node_tasks.items()):
                if task.done():
                    self._node_tasks.pop(node)
            await self.ctx.wait_change(timeout=1.0)

    async def stop(self) -> None:
        self.ctx.stopping = True
        tasks = self._tasks + list(self._node_tasks.values()) + self.jobs.tasks()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._node_tasks.clear()
        await self.ctx.nodes.close()

    @property
    def state(self) -> ClusterState:
        return self.ctx.state
