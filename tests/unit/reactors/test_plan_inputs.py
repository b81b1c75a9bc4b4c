"""The instance workers skip a pass when an instance's plan inputs are those of its
last converged pass, and after a node's report mark only the instances whose own
items it changed. Neither may miss a change: on a converged cluster, each change
below (made through the fold, as the reactors see it) is applied, and every
instance whose plan differs afterwards must have different plan inputs and be
among the instances the report marks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from events.ids import InstanceName, NodeName, new_event_id
from events.model import (
    DrbdResourceObs,
    Event,
    InstanceUpdated,
    NodeHealth,
    NodeHealthChanged,
    NodeObserved,
    VmObs,
)
from events.projection import fold
from events.state import ClusterState
from reactors.plans.inputs import plan_inputs
from reactors.plans.instance import plan_instance
from reactors.plans.seen import instances_changed, instances_on
from tests.support.states.big_cluster import converged_state

NOW = 10.0
NODE = NodeName("node002")


def _observed(state: ClusterState, **sections: object) -> NodeObserved:
    return NodeObserved(id=new_event_id(), time=2.0, actor="test", node=NODE, **sections)  # type: ignore[arg-type]


def _vm_gone(state: ClusterState) -> Event:
    vms = state.observed[NODE].vms
    return _observed(state, vms=vms[1:])


def _vm_paused_to_shutdown(state: ClusterState) -> Event:
    vms = state.observed[NODE].vms
    return _observed(state, vms=(replace(vms[0], status="shutdown"), *vms[1:]))


def _drbd_demoted(state: ClusterState) -> Event:
    drbd = state.observed[NODE].drbd
    first: DrbdResourceObs = drbd[0]
    role = "Secondary" if first.role == "Primary" else "Primary"
    return _observed(state, drbd=(replace(first, role=role), *drbd[1:]))


def _drbd_peer_lost(state: ClusterState) -> Event:
    drbd = state.observed[NODE].drbd
    last = drbd[-1]
    peers = tuple(replace(p, connection="StandAlone") for p in last.peers)
    return _observed(state, drbd=(*drbd[:-1], replace(last, peers=peers)))


def _lv_gone(state: ClusterState) -> Event:
    vols = state.observed[NODE].volumes
    return _observed(state, volumes=vols[:-1])


def _stray_vm(state: ClusterState) -> Event:
    vms = state.observed[NODE].vms
    stray = VmObs(name="vm00003", pid=99, status="running", memory_mib=512, vcpus=1)
    return _observed(state, vms=tuple(sorted((*vms, stray), key=lambda v: v.name)))


def _node_suspect(state: ClusterState) -> Event:
    return NodeHealthChanged(
        id=new_event_id(), time=2.0, actor="test", node=NODE, health=NodeHealth.SUSPECT
    )


def _same_report(state: ClusterState) -> Event:
    obs = state.observed[NODE]
    # Equal sections, new objects (as a report decoded from etcd is).
    return _observed(
        state,
        vms=tuple(replace(v) for v in obs.vms),
        drbd=tuple(replace(r) for r in obs.drbd),
        volumes=tuple(replace(v) for v in obs.volumes),
    )


CHANGES: dict[str, Callable[[ClusterState], Event]] = {
    "a VM gone": _vm_gone,
    "a VM shut down": _vm_paused_to_shutdown,
    "a DRBD role changed": _drbd_demoted,
    "a DRBD peer StandAlone": _drbd_peer_lost,
    "an LV gone": _lv_gone,
    "a VM where it is not placed": _stray_vm,
    "the node suspect": _node_suspect,
    "the same report again": _same_report,
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_no_change_a_plan_sees_is_missed(change: str) -> None:
    before = converged_state(6, 24)
    names = sorted(before.desired.instances)
    plans = {n: plan_instance(state=before, instance=n, now=NOW) for n in names}
    assert all(p.converged for p in plans.values())
    inputs = {n: plan_inputs(before, n) for n in names}
    after = fold(before, [(before.revision + 1, CHANGES[change](before))])
    replanned = {n for n in names if plan_instance(state=after, instance=n, now=NOW) != plans[n]}
    if change != "the same report again":
        assert replanned, "the change must matter to some plan"
    unchanged_inputs = {n for n in names if plan_inputs(after, n) == inputs[n]}
    assert not replanned & unchanged_inputs
    marked = instances_changed(before.observed[NODE], after.observed[NODE])
    if marked is None:  # every instance there is marked
        marked = instances_on(after, NODE) | instances_on(before, NODE)
    assert replanned <= marked
    if change == "the same report again":
        assert marked == set()
        assert unchanged_inputs == set(names)


def test_inputs_change_with_the_instance_record_alone() -> None:
    state = converged_state(4, 8)
    name = InstanceName("vm00001")
    spec = replace(state.desired.instances[name], memory_mib=4096)
    updated = InstanceUpdated(id=new_event_id(), time=2.0, actor="test", spec=spec)
    after = fold(state, [(state.revision + 1, updated)])
    assert plan_inputs(after, name) != plan_inputs(state, name)
    others = [n for n in state.desired.instances if n != name]
    assert all(plan_inputs(after, n) == plan_inputs(state, n) for n in others)
