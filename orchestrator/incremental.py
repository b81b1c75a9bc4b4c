"""Per-instance views kept from one folded state to the next: a view of an
instance (its status row, its RAPI object) is built again only when something it
is made of changed, so listing 2,000 instances costs what the changes since the
last listing cost, not 2,000 plans.

What changed is read off the two states themselves: the fold shares every map and
every entry it did not write, so an instance whose spec, placement, refusal,
restart record and version are the same objects, on nodes whose specs and
observations are the same objects, has the same view. A change of policy or of
any node's spec rebuilds everything. Views that depend on the clock (a restart
backoff still running) are built again once a second.

Pure: no I/O, no logging; `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

from events.ids import InstanceName, NodeName
from events.model import instance_key
from events.state import ClusterState, NodeObservation
from reactors.naming import disks_by_instance
from reactors.plans.queries import vm_alive, vm_on
from reactors.plans.seen import instances_on, node_items

T = TypeVar("T")
CLOCK_STEP_S = 1.0


def _changed_keys(
    old: Mapping[InstanceName, object], new: Mapping[InstanceName, object]
) -> set[InstanceName]:
    if old is new:
        return set()
    keys = set(old) | set(new)
    return {k for k in keys if old.get(k) is not new.get(k)}


_LAST_CHANGE: list[tuple[ClusterState, ClusterState, set[InstanceName] | None]] = []


def changed_instances(old: ClusterState, new: ClusterState) -> set[InstanceName] | None:
    """Instances whose views may differ between `old` and `new` (their versions
    left aside); None: all may. The last answer is kept: every view asks the same."""
    if _LAST_CHANGE and _LAST_CHANGE[0][0] is old and _LAST_CHANGE[0][1] is new:
        return _LAST_CHANGE[0][2]
    changed = _changed_instances(old, new)
    _LAST_CHANGE[:] = [(old, new, changed)]
    return changed


def changed_versions(old: ClusterState, new: ClusterState) -> set[InstanceName]:
    """Instances whose version (the count of appends about them) moved."""
    if old.versions is new.versions:
        return set()
    return {
        name
        for name in new.desired.instances
        if old.versions.get(key := instance_key(name)) != new.versions.get(key)
    }


def _changed_instances(old: ClusterState, new: ClusterState) -> set[InstanceName] | None:
    if old.desired.policy is not new.desired.policy or old.desired.nodes is not new.desired.nodes:
        return None
    changed: set[InstanceName] = set()
    changed |= _changed_keys(old.desired.instances, new.desired.instances)
    changed |= _changed_keys(old.placements, new.placements)
    changed |= _changed_keys(old.refusals, new.refusals)
    changed |= _changed_keys(old.vm_starts, new.vm_starts)
    if old.observed is not new.observed:
        for node in set(old.observed) | set(new.observed):
            before, after = old.observed.get(node), new.observed.get(node)
            if before is not after:
                changed |= _changed_on(old, new, node, before, after)
    return changed


def _changed_on(
    old: ClusterState,
    new: ClusterState,
    node: NodeName,
    before: NodeObservation | None,
    after: NodeObservation | None,
) -> set[InstanceName]:
    """Instances whose part of one node's observation changed. Facts alone (the
    free memory a probe reads) change no instance's view; a node's health, or
    whether it is probed at all, changes every instance it holds."""
    touched = instances_on(old, node) | instances_on(new, node)
    if (
        before is None
        or after is None
        or (before.health, before.fenced_at, before.facts is None)
        != (after.health, after.fenced_at, after.facts is None)
    ):
        return touched
    if before.vms is after.vms and before.drbd is after.drbd and before.volumes is after.volumes:
        return set()
    old_items, new_items = node_items(before), node_items(after)
    old_disks, new_disks = disks_by_instance(before), disks_by_instance(after)
    changed = set()
    for name in touched:
        disks = set(old_disks.get(name, ())) | set(new_disks.get(name, ()))
        if (
            old_items.vms.get(name) != new_items.vms.get(name)
            or old_disks.get(name) != new_disks.get(name)
            or any(old_items.drbd.get(d) != new_items.drbd.get(d) for d in disks)
            or any(old_items.lvs.get(d) != new_items.lvs.get(d) for d in disks)
        ):
            changed.add(name)
    return changed


def _clocked(state: ClusterState, name: InstanceName) -> bool:
    """A view that may change with the clock alone: a VM started before (its
    restart backoff counts time) that is not running on its primary now."""
    placement = state.placements.get(name)
    if not state.vm_starts.get(name) or name not in state.desired.instances:
        return False
    return placement is None or not vm_alive(vm_on(state.observed.get(placement.primary), name))


def _all_clocked(state: ClusterState) -> set[InstanceName]:
    alive = {
        (node, vm.name) for node, obs in state.observed.items() for vm in obs.vms if vm_alive(vm)
    }
    out = set()
    for name, starts in state.vm_starts.items():
        placement = state.placements.get(name)
        if not starts or name not in state.desired.instances:
            continue
        if placement is None or (placement.primary, name) not in alive:
            out.add(name)
    return out


class PerInstance(Generic[T]):
    """One view per declared instance, built by `build(state, name, now)` and
    kept until what it is made of changes."""

    def __init__(
        self, build: Callable[[ClusterState, InstanceName, float], T], *, versions: bool = False
    ) -> None:
        self._build = build
        self._versions = versions  # the view shows the instance's version
        self._state: ClusterState | None = None
        self._values: dict[InstanceName, T] = {}
        self._clocked: set[InstanceName] = set()  # views that depend on the clock
        self._built_at = 0.0

    def _sync(self, state: ClusterState, now: float) -> None:
        if self._state is not state:
            changed = None if self._state is None else changed_instances(self._state, state)
            if changed is not None and self._versions and self._state is not None:
                changed = changed | changed_versions(self._state, state)
            if changed is None:
                self._values.clear()
                self._clocked = _all_clocked(state)
            else:
                for name in changed:
                    self._values.pop(name, None)
                    if _clocked(state, name):
                        self._clocked.add(name)
                    else:
                        self._clocked.discard(name)
            self._state = state
        if now - self._built_at >= CLOCK_STEP_S or now < self._built_at:
            for name in self._clocked:
                self._values.pop(name, None)
            self._built_at = now

    def prime(self, state: ClusterState, values: dict[InstanceName, T]) -> None:
        """Start from views of `state` built elsewhere (saved with a checkpoint);
        those that depend on the clock are built again."""
        self._state = state
        self._values = {n: v for n, v in values.items() if n in state.desired.instances}
        self._clocked = _all_clocked(state)
        for name in self._clocked:
            self._values.pop(name, None)

    def get(self, state: ClusterState, name: InstanceName, *, now: float) -> T:
        self._sync(state, now)
        value = self._values.get(name)
        if value is None:
            value = self._values[name] = self._build(state, name, now)
        return value

    def many(self, state: ClusterState, names: Iterable[InstanceName], *, now: float) -> list[T]:
        self._sync(state, now)
        out = []
        for name in names:
            value = self._values.get(name)
            if value is None:
                value = self._values[name] = self._build(state, name, now)
            out.append(value)
        return out
