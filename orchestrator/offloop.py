"""Work that must not run on the orchestrator's event loop (safety rule 9): a
loop busy for seconds starves the probes, and every node looks dead at once.

- `WorkerPool`: CPU-heavy pure functions (parsing and planning a desired-state
  file) in worker processes, with a cap on how many run and wait at once (a
  caller beyond it is told the server is busy), a time cap (a worker over it is
  killed and replaced) and a memory cap per worker (RLIMIT_AS), run at a lower
  CPU priority than the orchestrator.
- `in_own_loop`: I/O-bound work with CPU in between (folding the log to a past
  revision, scanning it) on an event loop of its own in a thread, with its own
  etcd connection, so the reactors' loop only waits for the answer.

Holds no cluster logic; what runs is the caller's (module-level functions, as
worker processes import them by name).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """As many requests as allowed are running or waiting already."""


class TooSlow(Exception):
    """The work ran out of time; its worker was stopped."""


class WorkerFailed(Exception):
    """The worker died (out of memory, or killed)."""


def _limit_worker(memory_mib: int) -> None:
    """In each worker process: lower priority, and at most `memory_mib` of memory."""
    import resource

    with contextlib.suppress(OSError):
        os.nice(10)
    if memory_mib > 0:
        limit = memory_mib * 1024 * 1024
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@dataclass
class WorkerPool:
    workers: int = 1
    waiting: int = 2  # requests that may wait for a worker; more are refused (Busy)
    timeout_s: float = 30.0
    memory_mib: int = 2048
    _pool: ProcessPoolExecutor | None = None
    _slots: asyncio.Semaphore | None = None
    _admitted: int = 0
    runs: int = 0
    refused: int = 0
    killed: int = 0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: the orchestrator has threads (gRPC), which fork would copy
            # in whatever state they are.
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_limit_worker,
                initargs=(self.memory_mib,),
            )
        return self._pool

    def _reset(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """`fn(*args)` in a worker process; Busy, TooSlow or WorkerFailed."""
        if self._admitted >= self.workers + self.waiting:
            self.refused += 1
            raise Busy(f"{self._admitted} requests of this kind are running or waiting")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        self._admitted += 1
        try:
            async with self._slots:
                self.runs += 1
                loop = asyncio.get_running_loop()
                future = loop.run_in_executor(self._executor(), fn, *args)
                try:
                    return await asyncio.wait_for(future, timeout_s or self.timeout_s)
                except TimeoutError:
                    self.killed += 1
                    self._reset()
                    raise TooSlow(f"not done in {timeout_s or self.timeout_s:.0f}s") from None
                except BrokenProcessPool:
                    self._reset()
                    raise WorkerFailed("the worker process died (out of memory?)") from None
        finally:
            self._admitted -= 1

    def close(self) -> None:
        self._reset()


async def in_own_loop(work: Callable[[], Coroutine[Any, Any, T]], *, timeout_s: float) -> T:
    """Run `work()` to completion on a fresh event loop in a thread; TooSlow after
    `timeout_s` (the thread's loop is then cancelled)."""
    holder: dict[str, asyncio.AbstractEventLoop] = {}
    main: dict[str, asyncio.Task[T]] = {}

    def thread() -> T:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        try:
            task: asyncio.Task[T] = loop.create_task(work())
            main["task"] = task
            result: T = loop.run_until_complete(task)
            return result
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    future = asyncio.ensure_future(asyncio.to_thread(thread))
    done, _ = await asyncio.wait({future}, timeout=timeout_s)
    if future in done:
        return future.result()
    loop, task = holder.get("loop"), main.get("task")
    if loop is not None and task is not None:
        loop.call_soon_threadsafe(task.cancel)
    with contextlib.suppress(BaseException):
        await future
    raise TooSlow(f"not done in {timeout_s:.0f}s")
