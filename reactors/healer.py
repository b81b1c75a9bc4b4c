"""Self-healing after node loss: judge health from probe results (suspect, then
partitioned, unknown or lost), fence lost nodes with their fence agent (confirming
`status` off), fail their instances over to UpToDate secondaries, and re-protect
every instance that lost its secondary.

Decisions come from `reactors.plans.heal` (pure); this module only times, fences
and records. Health is judged on the loop watch's stall-free clock, and only by an
orchestrator that reaches a strict majority of the nodes (safety rule 7): one that
reaches fewer raises the `orchestrator-isolated` alert, declares nothing lost and
fences nothing. Fences are capped (one node at a time by default, never below a
majority up). Never fails over without a confirmed fence (rules 4 and 6): a node
whose agent fails is retried with backoff and alerted on, until it is fenced or a
person runs `corral node confirm-off`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from events.ids import EventId, InstanceName, NodeName
from events.model import (
    CLUSTER_KEY,
    AlertCleared,
    AlertRaised,
    Event,
    InstancePlaced,
    NodeFenced,
    NodeFenceFailed,
    NodeHealth,
    NodeHealthChanged,
    PlacementKind,
    instance_key,
    node_key,
)
from events.state import ClusterState
from events.store import EtcdUnavailable, NotLeader, VersionConflict
from reactors.context import ReactorContext
from reactors.placer import Placer
from reactors.plans.heal import (
    TIEBREAKER_NOTE,
    Reach,
    assess_unreachable,
    cluster_members,
    fencing_held_back,
    instances_needing_new_secondary,
    needs_tiebreaker,
    plan_failovers,
    runs_again,
)
from reactors.prober import Prober

log = structlog.get_logger("corral.healer")

ISOLATED = "orchestrator-isolated"
NO_TIEBREAKER = "no-tiebreaker"
NODEDOWN = "nodedown:"  # + instance: why it was not failed over
ALERT_REWRITE_S = 60.0  # a changed count in a raised alert's message, at most this often
FAILOVERS_PER_APPEND = 25  # each with its instance's expected version: one transaction


@dataclass
class Healer:
    ctx: ReactorContext
    prober: Prober
    placer: Placer
    tick_s: float = 0.25
    # Called (with why) once this orchestrator has been cut off from most nodes
    # for the lost timeout: the engine steps down if another one may lead.
    on_isolated: Callable[[str], Awaitable[None]] | None = None
    _fencing: dict[NodeName, asyncio.Task[None]] = field(default_factory=dict)
    _isolated_since: float | None = None
    _majority_since: float | None = None

    async def run(self) -> None:
        # Re-protection (allocations, one append each) runs beside the tick so that
        # rebuilding redundancy never delays detection, fencing or failover.
        reprotect = asyncio.create_task(self._reprotect_loop())
        try:
            while not self.ctx.stopping:
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("healer tick failed")
                await asyncio.sleep(self.tick_s)
        finally:
            reprotect.cancel()
            for task in list(self._fencing.values()):
                task.cancel()

    async def _reprotect_loop(self) -> None:
        while not self.ctx.stopping:
            try:
                await self._reprotect()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("re-protection pass failed")
            await asyncio.sleep(self.tick_s)

    def reach(self, state: ClusterState) -> Reach:
        """The members this orchestrator heard from within the suspect timeout."""
        now = self.ctx.trusted_now()
        window = self.ctx.suspect_timeout()
        reachable = set()
        for node in cluster_members(state):
            rec = self.prober.records.get(node)
            if (
                rec is not None
                and rec.failing_since is None
                and rec.last_ok is not None
                and now - rec.last_ok <= window
            ):
                reachable.add(node)
        return Reach(members=cluster_members(state), reachable=frozenset(reachable))

    async def tick(self) -> None:
        state = self.ctx.state
        now = self.ctx.trusted_now()
        reach = self.reach(state)
        await self._cluster_alerts(state, reach, now)
        for node, spec in sorted(state.desired.nodes.items()):
            if spec.offline:
                continue
            obs = state.observed.get(node)
            health = obs.health if obs else NodeHealth.UNKNOWN
            rec = self.prober.records.get(node)
            if rec is None or rec.failing_since is None:
                continue
            down_for = now - rec.failing_since
            if health == NodeHealth.ONLINE and down_for >= self.ctx.suspect_timeout():
                await self._health(node, NodeHealth.SUSPECT, f"no answer for {down_for:.1f}s")
            elif (
                health in (NodeHealth.SUSPECT, NodeHealth.PARTITIONED, NodeHealth.UNKNOWN)
                and (health != NodeHealth.UNKNOWN or obs is not None)
                and down_for >= self.ctx.lost_timeout()
                and reach.majority
            ):
                await self._judge(state, node, health, rec.failing_since, reach)
        state = self.ctx.state
        for node, obs in sorted(state.observed.items()):
            if obs.health == NodeHealth.LOST and node not in self._fencing and reach.majority:
                self._fencing[node] = asyncio.create_task(self._fence(node))
            if obs.health == NodeHealth.FENCED:
                await self._fail_over(node)
            if obs.health == NodeHealth.ONLINE:
                for prefix in ("partitioned:", "noevidence:", "held:"):
                    if f"{prefix}{node}" in state.alerts:
                        await self._clear(f"{prefix}{node}", node_key(node))
        # An instance not failed over keeps its reason until it runs again.
        for key in [k for k in state.alerts if k.startswith(NODEDOWN)]:
            name = InstanceName(key.removeprefix(NODEDOWN))
            if runs_again(state, name):
                await self._clear(key, instance_key(name))

    async def _judge(
        self,
        state: ClusterState,
        node: NodeName,
        health: NodeHealth,
        silent_since: float,
        reach: Reach,
    ) -> None:
        """`node` has been silent for the lost timeout, and we reach a majority."""
        # Only reports read (and folded) after it fell silent count as its
        # peers' word.
        reporting = {
            n
            for n in reach.reachable
            if (rec := self.prober.records.get(n)) is not None
            and rec.reported_at is not None
            and rec.reported_at > silent_since
        }
        verdict = assess_unreachable(state=state, node=node, reporting=reporting)
        if verdict.health == NodeHealth.PARTITIONED:
            if health != NodeHealth.PARTITIONED:
                await self._health(node, NodeHealth.PARTITIONED, verdict.detail)
                await self._alert(
                    f"partitioned:{node}", "warning", f"{node}: {verdict.detail}", node
                )
            return
        if verdict.health == NodeHealth.UNKNOWN:
            if health != NodeHealth.UNKNOWN:
                await self._health(node, NodeHealth.UNKNOWN, verdict.detail)
                await self._alert(
                    f"noevidence:{node}", "critical", f"{node}: {verdict.detail}", node
                )
            return
        held = fencing_held_back(
            state=state, node=node, members=reach.members, at_once=self.ctx.settings.fence_at_once
        )
        if held is not None:
            await self._alert(
                f"held:{node}",
                "critical",
                f"{node} is {verdict.detail}, but is not declared lost nor fenced: {held}",
                node,
            )
            return
        await self._health(node, NodeHealth.LOST, verdict.detail)
        if f"held:{node}" in state.alerts:
            await self._clear(f"held:{node}", node_key(node))

    async def _cluster_alerts(self, state: ClusterState, reach: Reach, now: float) -> None:
        """The isolation alert (raised once this orchestrator has heard from fewer
        than a majority for the suspect timeout, cleared once it has heard a majority
        again for as long) and the two-node cluster's tiebreaker note. Every raise
        and clear is an event: a new count in the message is written at most once a
        minute, and an orchestrator flapping at the edge of a majority does not
        raise and clear on every probe."""
        if reach.majority or not reach.members:
            self._isolated_since = None
            if self._majority_since is None:
                self._majority_since = now
            held_for = now - self._majority_since
            if ISOLATED in state.alerts and held_for >= self.ctx.suspect_timeout():
                await self._clear(ISOLATED, CLUSTER_KEY)
        else:
            self._majority_since = None
            if self._isolated_since is None:
                self._isolated_since = now
            cut_off_for = now - self._isolated_since
            if cut_off_for >= self.ctx.suspect_timeout():
                message = reach.isolation_message()
                current = state.alerts.get(ISOLATED)
                if current is None or (
                    current.message != message
                    and self.ctx.now() - current.raised_at >= ALERT_REWRITE_S
                ):
                    await self._cluster_alert(ISOLATED, "critical", message)
            if cut_off_for >= self.ctx.lost_timeout() and self.on_isolated is not None:
                await self.on_isolated(reach.isolation_message())
        if needs_tiebreaker(state):
            if NO_TIEBREAKER not in state.alerts:
                await self._cluster_alert(NO_TIEBREAKER, "warning", TIEBREAKER_NOTE)
        elif NO_TIEBREAKER in state.alerts:
            await self._clear(NO_TIEBREAKER, CLUSTER_KEY)

    async def _health(self, node: NodeName, health: NodeHealth, detail: str) -> None:
        log.warning("node health", node=node, health=health.value, detail=detail)
        await self.ctx.append(
            [
                NodeHealthChanged(
                    **self.ctx.stamp(),
                    node=node,
                    health=health,
                    detail=detail,
                    reason=detail,
                )
            ]
        )

    async def _alert(self, key: str, severity: str, message: str, node: NodeName) -> None:
        if key in self.ctx.state.alerts:
            return
        await self.ctx.append(
            [
                AlertRaised(
                    **self.ctx.stamp(),
                    alert=key,
                    severity=severity,
                    message=message,
                    subject=node_key(node),
                )
            ]
        )

    async def _cluster_alert(self, key: str, severity: str, message: str) -> None:
        log.warning("cluster alert", alert=key, message=message)
        await self.ctx.append(
            [
                AlertRaised(
                    **self.ctx.stamp(),
                    alert=key,
                    severity=severity,
                    message=message,
                    subject=CLUSTER_KEY,
                )
            ]
        )

    async def _clear(self, key: str, subject: str) -> None:
        await self.ctx.append(
            [
                AlertCleared(
                    **self.ctx.stamp(),
                    alert=key,
                    subject=subject,
                )
            ]
        )

    def _answered_since(self, node: NodeName, since: float) -> bool:
        rec = self.prober.records.get(node)
        return rec is not None and rec.last_ok is not None and rec.last_ok > since

    async def _fence(self, node: NodeName) -> None:
        """Confirm the node off with its agent: `status` first (a node that is
        already off is not switched off again), else `off` and `status` again;
        retry with backoff while it stays lost. Every attempt first confirms this
        term with a quorum of etcd and that the node has not answered since the
        decision; a node that answers again is taken back, never fenced on the old
        decision. Nothing destructive happens on failure."""
        attempt = 0
        decided_at = self.ctx.trusted_now()
        try:
            while not self.ctx.stopping:
                obs = self.ctx.state.observed.get(node)
                if obs is None or obs.health != NodeHealth.LOST:
                    return
                if self._answered_since(node, decided_at):
                    return  # the prober records it back (NodeRecovered)
                spec = self.ctx.state.desired.nodes.get(node)
                if spec is None:
                    return
                attempt += 1
                if spec.fence is None:
                    await self._alert(
                        f"fence:{node}",
                        "critical",
                        f"{node} is lost and has no fence agent: its instances stay down "
                        f"(ERROR_nodedown) until `corral node confirm-off {node}`",
                        node,
                    )
                    return
                await self.ctx.confirm_term()
                error, switched = await self._fence_once(node, decided_at)
                if error is None:
                    return  # it answers again: the prober takes it back
                if not error:
                    await self._fenced(node, spec.fence.agent, switched, decided_at)
                    return
                log.error("fence failed", node=node, attempt=attempt, error=error)
                await self.ctx.append(
                    [
                        NodeFenceFailed(
                            **self.ctx.stamp(),
                            node=node,
                            attempt=attempt,
                            error=error,
                        )
                    ]
                )
                await self._alert(
                    f"fence:{node}",
                    "critical",
                    f"fencing {node} failed ({error}); no failover until it is fenced or "
                    f"`corral node confirm-off {node}`",
                    node,
                )
                await asyncio.sleep(min(self.ctx.settings.fence_retry_max_s, 0.5 * 2**attempt))
        except (NotLeader, EtcdUnavailable) as exc:
            # No quorum or no longer the leader: no fence without a recorded,
            # current decision; the tick (of whoever leads) starts it again.
            log.warning("fence paused: the log cannot be written", node=node, error=str(exc))
        finally:
            self._fencing.pop(node, None)

    async def _fence_once(self, node: NodeName, decided_at: float) -> tuple[str | None, bool]:
        """One attempt: (error, "" when confirmed off, or None when the node
        answered again meanwhile; whether we switched it off ourselves)."""
        spec = self.ctx.state.desired.nodes[node]
        assert spec.fence is not None
        agent = spec.fence.agent
        try:
            rc, out = await self.ctx.nodes.fence(node, spec.fence, "status")
        except Exception as exc:
            return f"{agent}: {type(exc).__name__}: {exc}"[:300], False
        if rc == 2:
            return "", False  # already off: confirmed without switching it
        # Powered on: hung, or powered on again since the decision (a person, or
        # a power cycle) and answering by now. Ask it once more before switching
        # it off: a node that is back is taken back, not switched off and left
        # off (the waiting probe may come only after the agent's `off`).
        await self.prober.probe(node)
        if self._answered_since(node, decided_at):
            return None, False
        try:
            rc, out = await self.ctx.nodes.fence(node, spec.fence, "off")
            if rc != 0:
                return f"{agent} off exited {rc}: {out.strip()[:200]}", True
            rc, out = await self.ctx.nodes.fence(node, spec.fence, "status")
            if rc != 2:
                return f"{agent} status exited {rc} (2 means off): {out.strip()[:200]}", True
        except Exception as exc:
            return f"{agent}: {type(exc).__name__}: {exc}"[:300], True
        return "", True

    async def _fenced(self, node: NodeName, agent: str, switched: bool, decided_at: float) -> None:
        log.warning("node fenced", node=node, agent=agent, switched_off=switched)
        await self.ctx.append(
            [
                NodeFenced(
                    **self.ctx.stamp(),
                    node=node,
                    method="agent",
                    agent=agent,
                    reason=(
                        f"{agent} switched it off and confirmed power off"
                        if switched
                        else f"{agent} confirmed it was already powered off"
                    ),
                )
            ]
        )
        if switched and self._answered_since(node, decided_at):
            # It came back while its agent ran: it is off now (the failovers this
            # fence allows are safe), and it is taken back rather than left off.
            log.warning("fenced node had come back: powering it on again", node=node)
            spec = self.ctx.state.desired.nodes.get(node)
            if spec is not None and spec.fence is not None:
                try:
                    await self.ctx.nodes.fence(node, spec.fence, "on")
                except Exception as exc:
                    log.error("power on failed", node=node, error=str(exc)[:200])

    async def _fail_over(self, node: NodeName) -> None:
        state = self.ctx.state
        decisions, refusals = plan_failovers(state=state, node=node)
        fence_event = _last_fence_id(state, node)
        batch: list[tuple[Event, str]] = []
        for d in decisions:
            placement = state.placements[d.instance]
            batch.append(
                (
                    InstancePlaced(
                        **self.ctx.stamp(),
                        causation_id=fence_event,
                        correlation_id=f"heal-{node}",
                        reason=f"{node} fenced: failing over to its UpToDate secondary",
                        instance=d.instance,
                        primary=d.new_primary,
                        secondary=d.new_secondary,
                        disks=placement.disks,
                        kind=PlacementKind.FAILOVER,
                        superseded=node,
                    ),
                    instance_key(d.instance),
                )
            )
        alerts: list[Event] = []
        for r in refusals:
            key = f"{NODEDOWN}{r.instance}"
            if key not in state.alerts:
                alerts.append(
                    AlertRaised(
                        **self.ctx.stamp(),
                        causation_id=fence_event,
                        alert=key,
                        severity="critical",
                        message=f"{r.instance} not failed over: {r.reason}",
                        subject=instance_key(r.instance),
                    )
                )
        # Each failover carries its instance's version as read for the decision:
        # a concurrent change to that instance makes its group fail whole, and the
        # next tick decides again from the newer state.
        for i in range(0, len(batch), FAILOVERS_PER_APPEND):
            group = batch[i : i + FAILOVERS_PER_APPEND]
            try:
                await self.ctx.append(
                    [e for e, _ in group],
                    expected={k: state.versions.get(k, 0) for _, k in group},
                )
            except VersionConflict as exc:
                log.info("failover raced a change; deciding again", key=exc.key)
        if alerts:
            await self.ctx.append(alerts)

    async def _reprotect(self) -> None:
        state = self.ctx.state
        for name in instances_needing_new_secondary(state=state):
            placement = state.placements[name]
            obs = state.observed.get(placement.primary)
            if obs is None or obs.health != NodeHealth.ONLINE:
                continue  # fail over first
            await self.placer.replace_secondary(
                name,
                kind=PlacementKind.HEAL,
                reason=f"secondary {placement.secondary} is gone: rebuilding redundancy",
                correlation=f"heal-{placement.secondary}",
            )


def _last_fence_id(state: ClusterState, node: NodeName) -> EventId | None:
    obs = state.observed.get(node)
    return EventId(obs.fence_event_id) if obs and obs.fence_event_id else None
