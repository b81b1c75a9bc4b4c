"""A process that lost its term campaigns again, whatever ended the term (real etcd,
a whole reactor engine over an empty cluster): its lease revoked while etcd is
slow to take its new registration, a keepalive failing with an error nobody
expected, a term whose start fails, a late refusal of an append of a term already
over, a step-down nobody else takes over from. Each must lead again within the
lease TTL plus a few seconds; before these fixes each left the process a standby
for good (or, for the step-down, for its whole hold-off) while nobody held the key.
Found looking for why a heal bench at load 25 stood by for 6 minutes after its
term ended (docs/high-availability.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from devtools.local_etcd import LocalEtcd
from events.election import Member, read_leadership
from events.loading import load_state
from events.store import EventStore, NotLeader
from reactors.engine import Engine
from reactors.leader import Leadership
from tests.support.cluster.no_nodes import NO_NODES

TTL_S = 2
# The lease TTL plus a few seconds: the longest a key may stay vacant.
RELEAD_S = TTL_S + 4.0


@asynccontextmanager
async def engine_on(
    etcd: LocalEtcd, *, on_term: Callable[[int | None], None] | None = None
) -> AsyncIterator[Engine]:
    async with EventStore.connect([etcd.endpoint], "t", credentials=etcd.credentials()) as store:
        leadership = Leadership.for_store(store, ttl_s=TTL_S, member=Member.here(name="a"))
        engine = Engine.build(
            log_store=store, nodes=NO_NODES, state=await load_state(store), leadership=leadership
        )
        engine.on_term = on_term
        await engine.start()
        try:
            yield engine
        finally:
            await engine.stop()


async def leads_again(engine: Engine, *, after: int, within: float = RELEAD_S) -> int:
    """The engine's next term after `after`, with its reactors running, confirmed
    by the leader key in etcd; AssertionError naming the state if it takes longer."""
    store = engine.leadership.election.store
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        term = engine.leadership.term
        if term is not None and term > after and engine.leading:
            leader, _ = await read_leadership(store)
            if leader is not None and leader.term == term:
                return term
        await asyncio.sleep(0.05)
    leader, _ = await read_leadership(store)
    raise AssertionError(
        f"no new term within {within}s: term {engine.leadership.term}, lease "
        f"{engine.leadership.election.lease_id:x}, key held by {leader}"
    )


def once(fault: Callable[[], Awaitable[None]], real: Callable[..., Awaitable[Any]]) -> Any:
    """`real`, with `fault` awaited before its first call only."""
    armed = [True]

    async def call(*args: Any, **kwargs: Any) -> Any:
        if armed[0]:
            armed[0] = False
            await fault()
        return await real(*args, **kwargs)

    return call


async def test_a_lease_revoked_while_etcd_is_slow_to_register_again(etcd: LocalEtcd) -> None:
    """The term ends with its lease; registering again, the member key's put
    outlasts the registration's patience. The lease granted just before was kept
    as this process's lease, never marked registered, and refreshed for ever:
    nothing campaigned again."""
    async with engine_on(etcd) as engine:
        first = await engine.wait_leading(timeout=10)
        store = engine.leadership.election.store

        async def slow() -> None:
            await asyncio.sleep(2.0 * TTL_S)  # etcd answering in seconds

        store.client.put = once(slow, store.client.put)  # type: ignore[method-assign]
        await store.client.revoke_lease(engine.leadership.election.lease_id)
        await leads_again(engine, after=first, within=RELEAD_S + 2.0 * TTL_S)


async def test_a_keepalive_failing_with_an_unexpected_error(etcd: LocalEtcd) -> None:
    """A refresh fails with an error outside the ones the keepalive expects (aetcd
    on a client closed under it answers AttributeError): the keepalive ended, the
    lease expired, the term was never ended here and nobody led again."""
    async with engine_on(etcd) as engine:
        first = await engine.wait_leading(timeout=10)
        election = engine.leadership.election

        async def closed() -> None:
            raise AttributeError("'NoneType' object has no attribute 'LeaseKeepAlive'")

        election.refresh = once(closed, election.refresh)  # type: ignore[method-assign]
        await election.store.client.revoke_lease(election.lease_id)
        await leads_again(engine, after=first)


async def test_a_term_whose_start_fails(etcd: LocalEtcd) -> None:
    """An error while a term starts (here its metrics callback) ended the process's
    campaign for good: it kept its lease, and nobody led once the term was over."""
    calls: list[int | None] = []

    def on_term(term: int | None) -> None:
        calls.append(term)
        if len(calls) == 1:
            raise RuntimeError("metrics exporter failed")

    async with engine_on(etcd, on_term=on_term) as engine:
        await leads_again(engine, after=0, within=10.0)
        assert len(calls) >= 2 and calls[0] is not None, calls


async def test_a_late_refusal_does_not_end_the_next_term(etcd: LocalEtcd) -> None:
    """An append of an ended term refused after the next term began (it was in
    flight across the handover) ended that next term too."""
    async with engine_on(etcd) as engine:
        first = await engine.wait_leading(timeout=10)
        election = engine.leadership.election
        await election.store.client.revoke_lease(election.lease_id)
        second = await leads_again(engine, after=first)
        assert engine.ctx.on_not_leader is not None
        engine.ctx.on_not_leader(NotLeader(first, second))
        await asyncio.sleep(0.2)
        assert engine.leadership.term == second and engine.leading


async def test_a_step_down_nobody_takes_over_from(etcd: LocalEtcd) -> None:
    """A leader that stepped down (isolated) held off campaigning for its whole
    hold-off even when no other orchestrator took the key: nobody led meanwhile."""
    async with engine_on(etcd) as engine:
        first = await engine.wait_leading(timeout=10)
        engine.leadership.step_down("testing", hold_off_s=120)
        await leads_again(engine, after=first, within=TTL_S + RELEAD_S)


async def test_a_leader_stalled_past_its_lease(etcd: LocalEtcd) -> None:
    """The leader's event loop stalls past its lease (as under SIGSTOP or a starved
    process; here a blocking sleep): awake again, it ends its term and leads a new
    one within the lease TTL plus a few seconds."""
    async with engine_on(etcd) as engine:
        first = await engine.wait_leading(timeout=10)
        time.sleep(TTL_S + 1.0)  # noqa: ASYNC251 - the stall under test
        await leads_again(engine, after=first)
