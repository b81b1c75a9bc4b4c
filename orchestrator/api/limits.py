"""Bounds on the work one API client can cause: Server-Sent Event streams per
token and in all (each holds an etcd watch and may replay history), and heavy
reads (event log scans, the state at a past revision) that run at most a few at a
time and scan at most SCAN_LIMIT events per request, the rest paged.

Holds counters only; must not read etcd or the state itself.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from orchestrator.api.context import ApiError

MAX_STREAMS = 64
MAX_STREAMS_PER_TOKEN = 4
MAX_HEAVY_READS = 2
SCAN_LIMIT = 20_000  # events one /events request reads at most


@dataclass
class ApiLimits:
    max_streams: int = MAX_STREAMS
    max_streams_per_token: int = MAX_STREAMS_PER_TOKEN
    max_heavy_reads: int = MAX_HEAVY_READS
    streams: Counter[str] = field(default_factory=Counter)
    heavy: int = 0

    @contextlib.asynccontextmanager
    async def stream(self, principal: str) -> AsyncIterator[None]:
        """Hold one event stream for `principal`; 429 when over either limit."""
        if self.streams[principal] >= self.max_streams_per_token:
            raise ApiError(
                429,
                "too_many_streams",
                f"{principal} already has {self.max_streams_per_token} event streams open",
            )
        if sum(self.streams.values()) >= self.max_streams:
            raise ApiError(429, "too_many_streams", "the server's event streams are all in use")
        self.streams[principal] += 1
        try:
            yield
        finally:
            self.streams[principal] -= 1
            if self.streams[principal] <= 0:
                del self.streams[principal]

    @contextlib.asynccontextmanager
    async def heavy_read(self) -> AsyncIterator[None]:
        """One log scan or past-state fold; 429 (retry later) when the few allowed
        at once are running, rather than queueing work behind them."""
        if self.heavy >= self.max_heavy_reads:
            raise ApiError(429, "busy", "log reads are busy; retry in a moment")
        self.heavy += 1
        try:
            yield
        finally:
            self.heavy -= 1


LIMITS: web.AppKey[ApiLimits] = web.AppKey("corral_api_limits", ApiLimits)


def limits_of(request: web.Request) -> ApiLimits:
    return request.app[LIMITS]
