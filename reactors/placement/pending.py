"""The placer's working model for one pass over the pending instances: hail's
choice for each one in turn (the array allocator of `reactors.placement.pair_scores`,
which takes in each choice as it is made, so a pass over thousands of instances
never refolds or rescores the cluster), and DRBD minors and ports handed out in
order (`reactors.naming.DiskNumbers`). Its choices hold only while the folded
state is the one it was built on plus the choices recorded since: `holds` checks
that (the same desired nodes, groups and policy, the same specs for every instance
placed or chosen, the same usable nodes, no placement changed by anyone else),
and `adopt` takes in the state once the choices are folded.

Instances the arrays do not model (tagged ones: anti-affinity and exclusion tags
are scored pair by pair; ones with a NIC on a bridge some node lacks), and any
instance no pair fits (its refusal names the failures), are left to
`reactors.placement.allocator.choose_pair`: `choose` answers None for them.

Pure: no I/O, no logging, no asyncio; it proposes, the placer records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events.ids import InstanceName, NodeName
from events.model import DiskPlacement
from events.specs import InstanceSpec
from events.state import ClusterState
from reactors.naming import DiskNumbers
from reactors.placement.allocator import new_instance, unusable
from reactors.placement.pair_scores import Allocator


@dataclass(frozen=True, slots=True, kw_only=True)
class Choice:
    instance: InstanceName
    primary: NodeName
    secondary: NodeName
    score: float
    reason: str


def _unusable(state: ClusterState) -> tuple[str | None, ...]:
    return tuple(unusable(state, n) for n in sorted(state.desired.nodes))


class PendingModel:
    """Built from one folded state; `choose` one instance after another."""

    def __init__(self, state: ClusterState) -> None:
        self._alloc = Allocator(state=state)
        self._numbers = DiskNumbers.of(state)
        self._observed = state.observed
        self._nodes = state.desired.nodes
        self._groups = state.desired.groups
        self._policy = state.desired.policy
        self._instances = state.desired.instances
        self._unusable = _unusable(state)
        self._placements = state.placements
        # chosen, not yet seen folded: instance -> (spec, primary, secondary)
        self._chosen: dict[InstanceName, tuple[InstanceSpec, NodeName, NodeName]] = {}

    def choose(self, spec: InstanceSpec) -> Choice | None:
        """Hail's pair for `spec`, taken in by the model at once; None when the
        pair-by-pair allocator must answer (a tagged instance, one whose bridges
        some node lacks, or no pair fits)."""
        if spec.tags or (spec.nics and self._lacks_bridges(spec)):
            return None
        inst = new_instance(spec)
        pick = self._alloc.pick(inst, primary=spec.primary, secondary=spec.secondary)
        if pick is None:
            return None
        was = self._alloc.total
        self._alloc.place(pick, inst)
        self._chosen[spec.name] = (spec, pick.primary, pick.secondary)
        score = self._alloc.total
        return Choice(
            instance=spec.name,
            primary=pick.primary,
            secondary=pick.secondary,
            score=score,
            reason=f"allocator: {pick.primary}/{pick.secondary} of {pick.possible} possible "
            f"pairs, Ganeti cluster score after {score:.6f} (was {was:.6f})",
        )

    def _lacks_bridges(self, spec: InstanceSpec) -> bool:
        links = {nic.link for nic in spec.nics}
        for obs in self._observed.values():
            bridges = obs.facts.bridges if obs.facts is not None else None
            if bridges is not None and not links <= set(bridges):
                return True
        return False

    def disks(self, state: ClusterState, spec: InstanceSpec) -> tuple[DiskPlacement, ...]:
        """Minors and ports for a chosen instance, clear of every placement and of
        what the nodes report in `state`."""
        if state.observed is not self._observed:
            self._numbers.see(state)
            self._observed = state.observed
        return self._numbers.take(spec.disks)

    def holds(self, state: ClusterState) -> bool:
        """Whether the choices made so far still stand on `state` (nothing they
        depend on changed since the model was built or last adopted a state)."""
        desired = state.desired
        if (
            desired.nodes is not self._nodes
            or desired.groups is not self._groups
            or desired.policy is not self._policy
            or state.placements is not self._placements
        ):
            return False
        if desired.instances is not self._instances:
            # Instances declared since change nothing; a spec changed does.
            placed = (*self._placements, *self._chosen)
            if any(desired.instances.get(n) is not self._spec(n) for n in placed):
                return False
            self._instances = desired.instances
        return _unusable(state) == self._unusable

    def _spec(self, name: InstanceName) -> InstanceSpec | None:
        chosen = self._chosen.get(name)
        return chosen[0] if chosen is not None else self._instances.get(name)

    def adopt(self, state: ClusterState, names: Sequence[InstanceName]) -> bool:
        """Go on from `state`, once the choices `names` are folded in it: True when
        `state` is the model's state plus exactly those placements, False (the
        model is then of no further use) otherwise."""
        new = state.placements
        if len(new) != len(self._placements) + len(names):
            return False
        for name in names:
            chosen = self._chosen.pop(name, None)
            placement = new.get(name)
            if (
                chosen is None
                or placement is None
                or (chosen[1], chosen[2]) != (placement.primary, placement.secondary)
            ):
                return False
        if any(new.get(k) is not v for k, v in self._placements.items()):
            return False
        self._placements = new
        return not self._chosen and self.holds(state)
