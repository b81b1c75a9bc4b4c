"""Self-healing after node loss: judge health from probe results (suspect, then
partitioned or lost), fence lost nodes with their fence agent (confirming `status`
off), fail their instances over to UpToDate secondaries, and re-protect every
instance that lost its secondary.

Decisions come from `reactors.plans.heal` (pure); this module only times, fences and
records. Never fails over without a confirmed fence (safety rules 4 and 6): a node
whose agent fails is retried with backoff and alerted on, until it is fenced or a
person runs `corral node confirm-off`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from events.ids import EventId, NodeName, new_event_id
from events.model import (
    AlertCleared,
    AlertRaised,
    Event,
    InstancePlaced,
    NodeFenced,
    NodeFenceFailed,
    NodeHealth,
    NodeHealthChanged,
    PlacementKind,
)
from events.state import ClusterState
from reactors.context import ReactorContext
from reactors.placer import Placer
from reactors.plans.heal import assess_unreachable, instances_needing_new_secondary, plan_failovers
from reactors.prober import Prober

log = structlog.get_logger("corral.healer")


@dataclass
class Healer:
    ctx: ReactorContext
    prober: Prober
    placer: Placer
    tick_s: float = 0.25
    _fencing: dict[NodeName, asyncio.Task[None]] = field(default_factory=dict)
    _failed_over: set[EventId] = field(default_factory=set)

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

    async def _reprotect_loop(self) -> None:
        while not self.ctx.stopping:
            try:
                await self._reprotect()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("re-protection pass failed")
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        state = self.ctx.state
        now = self.ctx.now()
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
            elif health in (NodeHealth.SUSPECT, NodeHealth.PARTITIONED, NodeHealth.UNKNOWN) and (
                down_for >= self.ctx.lost_timeout()
            ):
                verdict = assess_unreachable(state=state, node=node)
                if verdict.health == NodeHealth.PARTITIONED:
                    if health != NodeHealth.PARTITIONED:
                        await self._health(node, NodeHealth.PARTITIONED, verdict.detail)
                        await self._alert(
                            f"partitioned:{node}", "warning", f"{node}: {verdict.detail}", node
                        )
                elif health != NodeHealth.UNKNOWN or obs is not None:
                    await self._health(node, NodeHealth.LOST, verdict.detail)
        state = self.ctx.state
        for node, obs in sorted(state.observed.items()):
            if obs.health == NodeHealth.LOST and node not in self._fencing:
                self._fencing[node] = asyncio.create_task(self._fence(node))
            if obs.health == NodeHealth.FENCED:
                await self._fail_over(node)
            if obs.health == NodeHealth.ONLINE and f"partitioned:{node}" in state.alerts:
                await self.ctx.append(
                    [
                        AlertCleared(
                            id=new_event_id(),
                            time=self.ctx.now(),
                            actor=self.ctx.actor,
                            alert=f"partitioned:{node}",
                            subject=f"node/{node}",
                        )
                    ]
                )

    async def _health(self, node: NodeName, health: NodeHealth, detail: str) -> None:
        log.warning("node health", node=node, health=health.value, detail=detail)
        await self.ctx.append(
            [
                NodeHealthChanged(
                    id=new_event_id(),
                    time=self.ctx.now(),
                    actor=self.ctx.actor,
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
                    id=new_event_id(),
                    time=self.ctx.now(),
                    actor=self.ctx.actor,
                    alert=key,
                    severity=severity,
                    message=message,
                    subject=f"node/{node}",
                )
            ]
        )

    async def _fence(self, node: NodeName) -> None:
        """Power the node off with its agent and confirm `status` is off; retry with
        backoff while it stays lost. Nothing destructive happens on failure."""
        attempt = 0
        try:
            while not self.ctx.stopping:
                obs = self.ctx.state.observed.get(node)
                if obs is None or obs.health != NodeHealth.LOST:
                    return
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
                error = ""
                try:
                    rc, out = await self.ctx.nodes.fence(node, spec.fence, "off")
                    if rc != 0:
                        error = f"{spec.fence.agent} off exited {rc}: {out.strip()[:200]}"
                    else:
                        rc, out = await self.ctx.nodes.fence(node, spec.fence, "status")
                        if rc != 2:
                            error = (
                                f"{spec.fence.agent} status exited {rc} (2 means off): "
                                f"{out.strip()[:200]}"
                            )
                except Exception as exc:
                    error = f"{spec.fence.agent}: {type(exc).__name__}: {exc}"[:300]
                if not error:
                    log.warning("node fenced", node=node, agent=spec.fence.agent)
                    await self.ctx.append(
                        [
                            NodeFenced(
                                id=new_event_id(),
                                time=self.ctx.now(),
                                actor=self.ctx.actor,
                                node=node,
                                method="agent",
                                agent=spec.fence.agent,
                                reason=f"{spec.fence.agent} confirmed power off",
                            )
                        ]
                    )
                    return
                log.error("fence failed", node=node, attempt=attempt, error=error)
                await self.ctx.append(
                    [
                        NodeFenceFailed(
                            id=new_event_id(),
                            time=self.ctx.now(),
                            actor=self.ctx.actor,
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
        finally:
            self._fencing.pop(node, None)

    async def _fail_over(self, node: NodeName) -> None:
        state = self.ctx.state
        decisions, refusals = plan_failovers(state=state, node=node)
        events: list[Event] = []
        fence_event = _last_fence_id(state, node)
        for d in decisions:
            placement = state.placements[d.instance]
            events.append(
                InstancePlaced(
                    id=new_event_id(),
                    time=self.ctx.now(),
                    actor=self.ctx.actor,
                    causation_id=fence_event,
                    correlation_id=f"heal-{node}",
                    reason=f"{node} fenced: failing over to its UpToDate secondary",
                    instance=d.instance,
                    primary=d.new_primary,
                    secondary=d.new_secondary,
                    disks=placement.disks,
                    kind=PlacementKind.FAILOVER,
                    superseded=node,
                )
            )
        for r in refusals:
            key = f"nodedown:{r.instance}"
            if key not in state.alerts:
                events.append(
                    AlertRaised(
                        id=new_event_id(),
                        time=self.ctx.now(),
                        actor=self.ctx.actor,
                        causation_id=fence_event,
                        alert=key,
                        severity="critical",
                        message=f"{r.instance} not failed over: {r.reason}",
                        subject=f"instance/{r.instance}",
                    )
                )
        if events:
            # Per-instance expected versions: a concurrent change to one of these
            # instances makes this batch fail whole, and the next tick re-decides.
            await self.ctx.append(events)

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
