"""The placement reactor: gives every declared instance without a placement a
primary and a secondary (the allocator in `reactors.placement.allocator`), DRBD minors
and ports (`reactors.naming`), and records the decision once as InstancePlaced, or
the refusal with its reasons as PlacementRefused. Also picks new secondaries for
re-protection and replace-disks.

One placer at a time, one instance at a time: every decision sees the previous
ones, so two instances never take the same memory. A pass decides on a working
model of the cluster that takes in each decision as it is made
(`reactors.placement.pending`), and records up to PLACE_BATCH decisions in one
append, once the folded state is checked to be still the model's own; when it is
not (a node or a spec changed meanwhile), the decisions not yet recorded are
dropped and the pass starts again from the new state. Tagged instances, and
those no pair fits, are decided pair by pair on the folded state itself
(`choose_pair`). Writes are guarded by each instance's version (a concurrent
change makes the append fail and the next pass re-decide).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from events.ids import InstanceName, NodeName
from events.model import (
    Event,
    InstancePlaced,
    PlacementKind,
    PlacementRefused,
    instance_key,
)
from events.state import ClusterState
from reactors.context import ReactorContext
from reactors.naming import new_disks
from reactors.placement.allocator import choose_new_secondary, choose_pair
from reactors.placement.pending import Choice, PendingModel

log = structlog.get_logger("corral.placer")

# Decisions recorded in one append at most (two etcd operations each, well under
# etcd's 128 per transaction).
PLACE_BATCH = 32

_WAKING = frozenset(
    {
        "instance.declared",
        "instance.updated",
        "node.declared",
        "node.updated",
        "node.flags_set",
        "policy.set",
        "node.recovered",
    }
)


@dataclass
class Placer:
    ctx: ReactorContext
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def wake(self) -> None:
        self._wake.set()

    def on_event(self, event: Event, state: ClusterState) -> None:
        del state
        if event.TYPE in _WAKING:
            self._wake.set()

    async def run(self) -> None:
        while not self.ctx.stopping:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.place_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("placement pass failed")
                await asyncio.sleep(1.0)
                self._wake.set()

    def pending(self, state: ClusterState) -> list[InstanceName]:
        return sorted(n for n in state.desired.instances if n not in state.placements)

    async def place_pending(self) -> None:
        async with self._lock:
            model: PendingModel | None = None
            chosen: list[Choice] = []
            for name in self.pending(self.ctx.state):
                spec = self.ctx.state.desired.instances.get(name)
                if spec is None or name in self.ctx.state.placements:
                    continue
                if model is None:
                    model = PendingModel(self.ctx.state)
                choice = model.choose(spec)
                if choice is None:
                    # Pair by pair on the folded state, once the model's own are in.
                    if chosen and not await self._record(model, chosen):
                        return
                    chosen = []
                    await self._place(name)
                    if name in self.ctx.state.placements:
                        model = None  # placed pair by pair: the next on a new model
                    continue
                chosen.append(choice)
                if len(chosen) >= PLACE_BATCH:
                    if not await self._record(model, chosen):
                        return
                    chosen = []
                # A decision takes milliseconds at 200 nodes: let the rest run.
                await asyncio.sleep(0)
            if chosen and model is not None:
                await self._record(model, chosen)

    async def _record(self, model: PendingModel, chosen: list[Choice]) -> bool:
        """Append the model's decisions, if the folded state is still the model's;
        False when the pass must start again (a new pass is asked for)."""
        state = self.ctx.state
        if not model.holds(state):
            log.info("cluster changed under the placement pass: deciding again")
            self._wake.set()
            return False
        events = [
            InstancePlaced(
                **self.ctx.stamp(),
                reason=c.reason,
                instance=c.instance,
                primary=c.primary,
                secondary=c.secondary,
                disks=model.disks(state, state.desired.instances[c.instance]),
                kind=PlacementKind.INITIAL,
                score=c.score,
            )
            for c in chosen
        ]
        expected = {
            instance_key(c.instance): state.versions.get(instance_key(c.instance), 0)
            for c in chosen
        }
        await self.ctx.append(events, expected=expected)
        if model.adopt(self.ctx.state, [c.instance for c in chosen]):
            return True
        self._wake.set()  # placed; the rest on a model of the new state
        return False

    async def _place(self, name: InstanceName) -> None:
        state = self.ctx.state
        spec = state.desired.instances.get(name)
        if spec is None or name in state.placements:
            return
        key = instance_key(name)
        choice = choose_pair(state=state, spec=spec)
        if choice.refusal is not None:
            if state.refusals.get(name) == choice.refusal:
                return
            await self.ctx.append(
                [
                    PlacementRefused(
                        **self.ctx.stamp(),
                        reason=choice.refusal,
                        instance=name,
                        failures=choice.failures,
                    )
                ],
                expected={key: state.versions.get(key, 0)},
            )
            log.warning("placement refused", instance=name, reason=choice.refusal)
            return
        assert choice.primary is not None and choice.secondary is not None
        disks = new_disks(state=state, disks=spec.disks)
        await self.ctx.append(
            [
                InstancePlaced(
                    **self.ctx.stamp(),
                    reason=choice.reason,
                    instance=name,
                    primary=choice.primary,
                    secondary=choice.secondary,
                    disks=disks,
                    kind=PlacementKind.INITIAL,
                    score=choice.score,
                )
            ],
            expected={key: state.versions.get(key, 0)},
        )

    async def replace_secondary(
        self,
        name: InstanceName,
        *,
        kind: PlacementKind,
        reason: str,
        correlation: str | None = None,
        target: str | None = None,
        with_it: Callable[[NodeName], Sequence[Event]] | None = None,
    ) -> str | None:
        """Record a new secondary for `name` (allocator's choice, or `target`), in
        one append with what `with_it` makes of it (a job's decided: line).
        Returns None on success, else why not."""
        async with self._lock:
            state = self.ctx.state
            placement = state.placements.get(name)
            spec = state.desired.instances.get(name)
            if placement is None or spec is None:
                return f"{name} is not placed"
            choice = choose_new_secondary(state=state, instance=name, target=target)
            n1_note = ""
            if choice.secondary is None and kind == PlacementKind.HEAL:
                # Two copies matter more than spare memory: rebuild redundancy even
                # if N+1 cannot hold any more, and say so.
                relaxed = choose_new_secondary(
                    state=state, instance=name, target=target, relax_n1=True
                )
                if relaxed.secondary is not None:
                    choice = relaxed
                    n1_note = f" (N+1 cannot be kept for {name}: {choice.reason})"
            if choice.refusal is not None or choice.secondary is None:
                key = f"noredundancy:{name}"
                if key not in state.alerts:
                    from events.model import AlertRaised

                    await self.ctx.append(
                        [
                            AlertRaised(
                                **self.ctx.stamp(),
                                alert=key,
                                severity="warning",
                                message=f"no new secondary for {name}: {choice.refusal}",
                                subject=instance_key(name),
                            )
                        ]
                    )
                return choice.refusal or "no candidate"
            disks = placement.disks  # minors and ports are cluster-wide: they stay
            await self.ctx.append(
                [
                    InstancePlaced(
                        **self.ctx.stamp(),
                        reason=f"{reason}; {choice.reason}{n1_note}",
                        correlation_id=correlation,
                        instance=name,
                        primary=placement.primary,
                        secondary=choice.secondary,
                        disks=disks,
                        kind=kind,
                        score=choice.score,
                        superseded=placement.superseded,
                    ),
                    *(with_it(choice.secondary) if with_it is not None else ()),
                ],
            )
            return None
