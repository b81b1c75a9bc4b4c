"""The loop-lag monitor: a task that wakes every `interval_s` and measures how late
it woke. Lateness above `threshold_s` is a stall of the orchestrator itself (a
blocking call on the loop, a starved or stopped process), and a stall is no
evidence about anyone else: the reactors judge node health on `trusted_now()`, a
monotonic clock that stands still while the loop stalls, and ask
`stalled_between()` whether a failed probe's window overlapped a stall.

Decides nothing and must never block: everything here is arithmetic on a few
floats, called from the loop it measures.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoopWatch:
    interval_s: float = 0.05
    threshold_s: float = 0.25
    clock: Callable[[], float] = time.monotonic
    # Called with each wake-up's lateness in seconds (the service feeds /metrics).
    on_lag: Callable[[float], None] | None = None
    stalled_s: float = 0.0  # all stall time seen so far
    stalls: int = 0
    max_lag_s: float = 0.0
    _expected: float | None = None
    _recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=256))

    def _pending(self, now: float) -> float:
        """A stall in progress: the monitor itself has not run since it was due."""
        if self._expected is None:
            return 0.0
        return max(0.0, now - self._expected - self.threshold_s)

    def trusted_now(self) -> float:
        """Monotonic seconds with every stall (past or in progress) taken out: the
        part of each stall beyond the threshold, so that it never runs backwards."""
        now = self.clock()
        return now - self.stalled_s - self._pending(now)

    def stalled_between(self, start: float, end: float) -> bool:
        """Whether the loop stalled at any time in [start, end] (monotonic seconds)."""
        if self._pending(end) and self._expected is not None and self._expected < end:
            return True
        return any(s <= end and e >= start for s, e in self._recent)

    def lag_now(self) -> float:
        """How late the monitor is right now (0 while it keeps its schedule)."""
        if self._expected is None:
            return 0.0
        return max(0.0, self.clock() - self._expected)

    async def run(self) -> None:
        while True:
            self._expected = self.clock() + self.interval_s
            await asyncio.sleep(self.interval_s)
            now = self.clock()
            lag = max(0.0, now - self._expected)
            self.max_lag_s = max(self.max_lag_s, lag)
            if lag > self.threshold_s:
                # From the previous wake-up on: the stall may have begun any time
                # after the monitor went to sleep.
                self._recent.append((self._expected - self.interval_s, now))
                self.stalled_s += lag - self.threshold_s
                self.stalls += 1
            self._expected = None
            if self.on_lag is not None:
                self.on_lag(lag)
