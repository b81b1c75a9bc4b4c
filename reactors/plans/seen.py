"""Where each instance is: which nodes' last observations name it (a VM, an LV or
a DRBD resource) and which nodes its placement uses, each observation's VMs and
DRBD resources by name, and which instances' items differ between two observations
of a node (`instances_changed`). Planning an instance asks these for a handful of
nodes instead of scanning every node's lists: with 4,000 instances on 200 nodes
the scans were most of a reconcile pass and of every status request.

Pure: no I/O, no logging. The indexes are kept from one state to the next: the
fold shares every unchanged map and observation between states, so only the
nodes whose observation changed are indexed again (keyed by identity, the
object kept with its entry so that an id is never reused).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from events.ids import InstanceName, NodeName
from events.model import DrbdResourceObs, VmObs, VolumeObs
from events.state import ClusterState, NodeObservation, Placement
from reactors.naming import disks_by_instance, parse_disk_name


@dataclass(frozen=True, slots=True)
class NodeItems:
    """One observation's VMs, DRBD resources and LVs by name, and the instances it
    names."""

    vms: dict[str, VmObs]
    drbd: dict[str, DrbdResourceObs]
    volumes: dict[tuple[str, str], VolumeObs]  # (volume group, LV name)
    lvs: dict[str, tuple[VolumeObs, ...]]  # LV name -> the LVs of that name, any group
    instances: frozenset[InstanceName]


def _by_name(volumes: tuple[VolumeObs, ...]) -> dict[str, tuple[VolumeObs, ...]]:
    out: dict[str, tuple[VolumeObs, ...]] = {}
    for vol in volumes:
        out[vol.name] = (*out.get(vol.name, ()), vol)
    return out


_ITEMS: dict[int, tuple[NodeObservation, NodeItems]] = {}
_ITEMS_MAX = 8192


def node_items(obs: NodeObservation) -> NodeItems:
    hit = _ITEMS.get(id(obs))
    if hit is not None and hit[0] is obs:
        return hit[1]
    names = set(disks_by_instance(obs))
    names.update(InstanceName(vm.name) for vm in obs.vms)
    items = NodeItems(
        vms={vm.name: vm for vm in obs.vms},
        drbd={res.name: res for res in obs.drbd},
        volumes={(vol.vg, vol.name): vol for vol in obs.volumes},
        lvs=_by_name(obs.volumes),
        instances=frozenset(names),
    )
    if len(_ITEMS) >= _ITEMS_MAX:
        _ITEMS.clear()
    _ITEMS[id(obs)] = (obs, items)
    return items


@dataclass
class _Sightings:
    observed: dict[NodeName, NodeObservation]  # the state's map this was built from
    per_node: dict[NodeName, tuple[NodeObservation, frozenset[InstanceName]]]
    by_instance: dict[InstanceName, frozenset[NodeName]]


_LAST_SEEN: list[_Sightings] = []


def seen_on(state: ClusterState, instance: InstanceName) -> frozenset[NodeName]:
    """Nodes whose last observation names `instance` (a VM, an LV or a DRBD resource)."""
    return _sightings(state).by_instance.get(instance, frozenset())


def _sightings(state: ClusterState) -> _Sightings:
    observed = state.observed
    last = _LAST_SEEN[0] if _LAST_SEEN else None
    if last is not None and last.observed is observed:
        return last
    per_node = dict(last.per_node) if last is not None else {}
    by_instance = dict(last.by_instance) if last is not None else {}
    changed: dict[NodeName, tuple[frozenset[InstanceName], frozenset[InstanceName]]] = {}
    for node, obs in observed.items():
        before = per_node.get(node)
        if before is not None and before[0] is obs:
            continue
        now = node_items(obs).instances
        changed[node] = (before[1] if before is not None else frozenset(), now)
        per_node[node] = (obs, now)
    for node in [n for n in per_node if n not in observed]:
        changed[node] = (per_node.pop(node)[1], frozenset())
    for node, (old, new) in changed.items():
        for name in old - new:
            left = by_instance.get(name, frozenset()) - {node}
            if left:
                by_instance[name] = left
            else:
                by_instance.pop(name, None)
        for name in new - old:
            by_instance[name] = by_instance.get(name, frozenset()) | {node}
    built = _Sightings(observed=observed, per_node=per_node, by_instance=by_instance)
    _LAST_SEEN[:] = [built]
    return built


@dataclass
class _Placed:
    placements: dict[InstanceName, Placement]
    primaries: dict[NodeName, frozenset[InstanceName]]
    secondaries: dict[NodeName, frozenset[InstanceName]]


_LAST_PLACED: list[_Placed] = []


def _placed(state: ClusterState) -> _Placed:
    last = _LAST_PLACED[0] if _LAST_PLACED else None
    if last is not None and last.placements is state.placements:
        return last
    primaries: dict[NodeName, set[InstanceName]] = {}
    secondaries: dict[NodeName, set[InstanceName]] = {}
    for name, p in state.placements.items():
        primaries.setdefault(p.primary, set()).add(name)
        secondaries.setdefault(p.secondary, set()).add(name)
    built = _Placed(
        placements=state.placements,
        primaries={n: frozenset(v) for n, v in primaries.items()},
        secondaries={n: frozenset(v) for n, v in secondaries.items()},
    )
    _LAST_PLACED[:] = [built]
    return built


def primaries_on(state: ClusterState, node: NodeName) -> frozenset[InstanceName]:
    return _placed(state).primaries.get(node, frozenset())


def secondaries_on(state: ClusterState, node: NodeName) -> frozenset[InstanceName]:
    return _placed(state).secondaries.get(node, frozenset())


def instances_on(state: ClusterState, node: NodeName) -> set[InstanceName]:
    """Instances placed on `node`, plus any whose leftovers the node reports."""
    found = set(primaries_on(state, node)) | secondaries_on(state, node)
    obs = state.observed.get(node)
    if obs is not None:
        found |= node_items(obs).instances
    return found


def instances_changed(old: NodeObservation, new: NodeObservation) -> set[InstanceName] | None:
    """The instances whose own VM, DRBD resources or LVs differ between two
    observations of one node; None when something every instance there plans from
    differs (the node's health, whether its facts are known). A section the fold
    kept (the same tuple) is not compared."""
    if old.health != new.health or (old.facts is None) != (new.facts is None):
        return None
    changed: set[InstanceName] = set()
    if old.vms is not new.vms or old.drbd is not new.drbd or old.volumes is not new.volumes:
        before, after = node_items(old), node_items(new)
        if old.vms is not new.vms:
            changed.update(InstanceName(n) for n in _differing(before.vms, after.vms))
        for names in (
            _differing(before.drbd, after.drbd) if old.drbd is not new.drbd else (),
            _differing(before.lvs, after.lvs) if old.volumes is not new.volumes else (),
        ):
            for name in names:
                parsed = parse_disk_name(name)
                if parsed is not None:
                    changed.add(parsed[0])
    return changed


def _differing(before: Mapping[str, object], after: Mapping[str, object]) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
