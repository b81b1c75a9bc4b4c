"""Leadership of this orchestrator process: the registration (a lease kept alive
while the process runs), the campaign for the leader key, and the knowledge of how
long the current term surely lasts: the send time of the last acknowledged
keepalive plus the lease TTL, on monotonic time, so a process stopped or starved
past its lease knows it the moment it runs again. Reactors act only while
`valid()`; a lost lease, a refused guarded append (`NotLeader`) or a step-down
ends the term, and the process campaigns again (after a hold-off if it stepped
down, so that a standby with a better view can lead; the hold-off ends early when
nobody takes the vacant key within a TTL). Nothing but the process's stop ends the
campaign or the keepalive: any error in them is logged and they go on.

Also `TermNodes`, the node transport as the reactors see it: mutating commands and
fence agents run only while the term is valid, and the nodes are told the term.

Never decides anything about the cluster; the etcd mechanics are `events.election`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from events.election import (
    WATCH_ERRORS,
    Election,
    LeaderRecord,
    LeaseLost,
    Member,
    read_leadership,
)
from events.ids import NodeName
from events.specs import FenceSpec
from events.store import EtcdUnavailable, EventStore
from reactors.plans.steps import Step
from reactors.seams import NodeOps, NodeSnapshot, StepOutcome

log = structlog.get_logger("corral.leader")

ELECTION_ERRORS = (EtcdUnavailable, LeaseLost, *WATCH_ERRORS)
T = TypeVar("T")


async def _within(coro: Coroutine[Any, Any, T], seconds: float) -> T:
    """`coro`'s result, or TimeoutError after `seconds` without waiting for it to
    wind down (a gRPC call on a failing channel may take its time to cancel)."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.wait({task}, timeout=seconds)
    finally:
        # Timed out, or the caller itself was cancelled (a term ending): the
        # call is left to wind down, and its error is read so that asyncio does
        # not report it as never retrieved (seen in chaos runs).
        if not task.done():
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
    if not task.done():
        raise TimeoutError
    return task.result()


def _cancelled_from_below() -> bool:
    """A CancelledError that is not this task being cancelled (gRPC cancels the
    calls of a channel closed under them): an etcd hiccup, not a stop."""
    task = asyncio.current_task()
    return task is not None and not task.cancelling()


class TermEnded(Exception):
    """A command refused locally: this process's term is over (or never began)."""


@dataclass
class Leadership:
    election: Election
    clock: Callable[[], float] = time.monotonic
    # Seconds short of the lease's end at which the term counts as over here:
    # covers the time between the keepalive's send and etcd's receipt.
    margin_s: float = 0.3
    term: int | None = None
    since: float = 0.0  # wall time the current term began
    lost_reason: str = ""
    terms: int = 0  # terms this process has held
    # Who leads and who is registered, as last read (every third of the TTL).
    known_leader: LeaderRecord | None = None
    known_members: tuple[Member, ...] = ()
    _valid_until: float = 0.0
    _ended: set[int] = field(default_factory=set)
    _lost: asyncio.Event = field(default_factory=asyncio.Event)
    _registered: asyncio.Event = field(default_factory=asyncio.Event)
    _hold_off_until: float = 0.0
    # During a hold-off: when the leader key was first seen vacant (a standby that
    # could lead takes a vacant key within a TTL; if none does, the hold-off ends).
    _vacant_since: float | None = None

    @classmethod
    def for_store(
        cls, store: EventStore, *, ttl_s: int = 5, member: Member | None = None
    ) -> Leadership:
        return cls(election=Election(store=store, member=member or Member.here(), ttl_s=ttl_s))

    @property
    def ttl_s(self) -> int:
        return self.election.ttl_s

    @property
    def member(self) -> Member:
        return self.election.member

    def valid(self) -> bool:
        """This process leads, and its lease cannot have ended yet."""
        return self.term is not None and self.clock() < self._valid_until

    def check(self) -> int:
        """The term, or TermEnded."""
        term = self.term
        if term is None or not self.valid():
            raise TermEnded(
                f"not the leader (term {term} ended: {self.lost_reason or 'lease not renewed'})"
                if term is not None
                else "not the leader"
            )
        return term

    # ------------------------------------------------------------ the lease

    async def keep_alive(self) -> None:
        """Run for the life of the process: register, refresh the lease every third
        of its TTL, register again under a new lease if it ended, and end the term
        as soon as its lease may have ended. Each refresh waits a quarter of the
        TTL at most, then tries again: an etcd member lost or an etcd election
        costs a retry, not the term."""
        patience = max(0.5, self.ttl_s / 4)
        while True:
            failed = False
            try:
                if not self.election.lease_id:
                    sent = self.clock()
                    await _within(self.election.register(), patience * 2)
                    self._valid_until = sent + self.ttl_s - self.margin_s
                self._registered.set()
                sent = self.clock()
                await _within(self.election.refresh(), patience)
                self._valid_until = sent + self.ttl_s - self.margin_s
                leader, members = await _within(read_leadership(self.election.store), patience)
                self.known_leader, self.known_members = leader, tuple(members)
            except LeaseLost as exc:
                self.end_term(str(exc))
                self.election.lease_id = 0
                self._registered.clear()
                continue
            except (*ELECTION_ERRORS, TimeoutError) as exc:
                log.warning("lease not refreshed", error=f"{type(exc).__name__}: {exc}"[:200])
                failed = True
            except asyncio.CancelledError:
                if not _cancelled_from_below():
                    raise
                failed = True
            except Exception:
                # Whatever it is, the lease must be kept (or given up and taken
                # again): a keepalive that died left a process that never led again.
                log.exception("lease refresh failed; trying again")
                failed = True
            if self.term is not None and not self.valid():
                self.end_term("the lease could not be refreshed in time")
            wait = 0.2 if failed else self.ttl_s / 3
            if self.term is not None:
                wait = min(wait, max(0.0, self._valid_until - self.clock()))
            await asyncio.sleep(wait)
            if self.term is not None and not self.valid():
                self.end_term("the lease could not be refreshed in time")

    # ------------------------------------------------------------ the term

    async def acquire(self) -> int:
        """Campaign until this process leads; its term. Nothing ends the campaign
        but this task's cancellation: an error is logged and the campaign goes on."""
        while True:
            await self._registered.wait()
            try:
                if await self._holding_off():
                    await asyncio.sleep(min(0.5, self._hold_off_until - self.clock()))
                    continue
                term = await self.election.campaign()
                if term is not None and term in self._ended:
                    # Our own key from a term that already ended here: give it up
                    # and campaign for a fresh term.
                    await self.election.resign(term)
                    continue
                if term is not None and self.valid_lease():
                    self.term, self.since, self.lost_reason = term, time.time(), ""
                    self.terms += 1
                    self._lost.clear()
                    log.info("leading", term=term, member=self.member.id)
                    return term
                await self.election.wait_vacant(timeout=float(self.ttl_s))
            except ELECTION_ERRORS as exc:
                log.warning("campaign failed", error=f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                if not _cancelled_from_below():
                    raise
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("campaign failed; campaigning again")
                await asyncio.sleep(0.5)

    async def _holding_off(self) -> bool:
        """Still in a step-down's hold-off. It ends early once the leader key has
        stayed vacant for a whole TTL: a standby able to lead would have taken it
        by then, and a cluster with nobody leading is worse than one led by this
        process (which, isolated, fences nothing)."""
        if self._hold_off_until <= self.clock():
            self._vacant_since = None
            return False
        vacant = await self.election.vacant()
        now = self.clock()
        if not vacant:
            self._vacant_since = None
            return True
        if self._vacant_since is None:
            self._vacant_since = now
        if now - self._vacant_since < self.ttl_s:
            return True
        log.warning("hold-off ended: nobody took the vacant leader key", member=self.member.id)
        self._hold_off_until = 0.0
        self._vacant_since = None
        return False

    def valid_lease(self) -> bool:
        return self.clock() < self._valid_until

    async def wait_lost(self) -> str:
        """Return (why) once the current term has ended."""
        await self._lost.wait()
        return self.lost_reason

    def end_term(self, reason: str, *, term_of: int | None = None) -> None:
        """End the current term (only if it is `term_of`, when given: a refusal
        that reaches here late, for an append of a term that already ended, must
        not end the next one)."""
        term = self.term
        if term is None or (term_of is not None and term_of != term):
            return
        self.term = None
        self.lost_reason = reason
        self._ended.add(term)
        self._lost.set()
        log.warning("term ended", term=term, reason=reason)
        # Give the key up (only if it is still this term's) so that a standby
        # need not wait for the lease to expire; best effort.
        asyncio.get_running_loop().create_task(self._resign(term))

    def step_down(self, reason: str, *, hold_off_s: float) -> None:
        """End the term and campaign again only after `hold_off_s`."""
        self._hold_off_until = self.clock() + hold_off_s
        self.end_term(reason)

    async def _resign(self, term: int) -> None:
        with contextlib.suppress(*ELECTION_ERRORS):
            await asyncio.wait_for(self.election.resign(term), 2.0)

    async def close(self) -> None:
        self.end_term("stopped")
        await self.election.release()


@dataclass
class TermNodes:
    """The node transport under a term: probes always (they change nothing);
    steps and fence agents only while the term is valid; the nodes are told the
    term so that they refuse commands of older ones (safety rule 8)."""

    inner: NodeOps
    leadership: Leadership

    async def probe(self, node: NodeName) -> NodeSnapshot:
        return await self.inner.probe(node)

    async def execute(self, step: Step) -> StepOutcome:
        try:
            self.inner.set_term(self.leadership.check())
        except TermEnded as exc:
            return StepOutcome(ok=False, command=step.summary, duration_s=0.0, error=str(exc))
        return await self.inner.execute(step)

    async def fence(self, node: NodeName, spec: FenceSpec, action: str) -> tuple[int, str]:
        self.leadership.check()
        return await self.inner.fence(node, spec, action)

    def set_term(self, term: int) -> None:
        self.inner.set_term(term)

    async def close(self) -> None:
        await self.inner.close()
