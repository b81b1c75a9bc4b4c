"""Views kept from one state to the next equal views built afresh, whatever
happens between two reads: probes that change facts, VMs, DRBD or LVs of one
node, health and fencing, placements, specs and power, restart records, steps
(versions), node specs and policy."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from events.ids import InstanceName, NodeName, new_event_id
from events.model import (
    DrbdResourceObs,
    Event,
    InstancePlaced,
    InstancePowerSet,
    InstanceUpdated,
    NodeFenced,
    NodeFlagsSet,
    NodeHealth,
    NodeHealthChanged,
    NodeObserved,
    PolicySet,
    StepSucceeded,
    VmObs,
)
from events.projection import fold
from events.specs import ClusterPolicy, PowerState
from events.state import ClusterState
from orchestrator.cluster_report import (
    _instance_row,
    instance_row,
    instance_rows_json,
    node_rows,
    row_json,
    status_dict,
)
from orchestrator.rapi import views
from orchestrator.roles import Principal, Role
from tests.support.states.big_cluster import converged_state

BASE = converged_state(5, 30)
NAMES = sorted(BASE.desired.instances)
NODES = sorted(BASE.desired.nodes)


def mutation(state: ClusterState, kind: int, n: int) -> list[Event]:
    node, name = NODES[n % len(NODES)], NAMES[n % len(NAMES)]
    obs = state.observed[node]
    t = 100.0 + n
    if kind == 0:  # free memory moved
        assert obs.facts is not None
        facts = replace(obs.facts, memory_free_mib=obs.facts.memory_free_mib + n + 1)
        return [NodeObserved(id=new_event_id(), time=t, actor="t", node=node, facts=facts)]
    if kind == 1:  # a VM went away
        return [NodeObserved(id=new_event_id(), time=t, actor="t", node=node, vms=obs.vms[1:])]
    if kind == 2:  # one DRBD resource lost its peer
        drbd: list[DrbdResourceObs] = list(obs.drbd)
        if drbd:
            drbd[0] = replace(drbd[0], peers=(), disk="UpToDate")
        return [NodeObserved(id=new_event_id(), time=t, actor="t", node=node, drbd=tuple(drbd))]
    if kind == 3:  # one LV gone
        return [
            NodeObserved(id=new_event_id(), time=t, actor="t", node=node, volumes=obs.volumes[1:])
        ]
    if kind == 4:
        health = (NodeHealth.SUSPECT, NodeHealth.LOST, NodeHealth.ONLINE)[n % 3]
        return [NodeHealthChanged(id=new_event_id(), time=t, actor="t", node=node, health=health)]
    if kind == 5:
        return [NodeFenced(id=new_event_id(), time=t, actor="t", node=node, method="agent")]
    if kind == 6:
        p = state.placements[name]
        return [
            InstancePlaced(
                id=new_event_id(),
                time=t,
                actor="t",
                instance=name,
                primary=p.secondary,
                secondary=p.primary,
                disks=p.disks,
            )
        ]
    if kind == 7:
        power = PowerState.STOPPED if n % 2 else PowerState.RUNNING
        return [InstancePowerSet(id=new_event_id(), time=t, actor="t", instance=name, power=power)]
    if kind == 8:
        spec = state.desired.instances[name]
        bigger = replace(spec, memory_mib=spec.memory_mib + 128)
        return [InstanceUpdated(id=new_event_id(), time=t, actor="t", spec=bigger)]
    if kind == 9:  # a VM started (restart record), with a stray VM elsewhere
        vms = (*obs.vms, VmObs(name=name, pid=9, status="running", memory_mib=1, vcpus=1))
        return [
            StepSucceeded(
                id=new_event_id(),
                time=t,
                actor="t",
                key=f"instance/{name}",
                step="start-vm",
                node=node,
            ),
            NodeObserved(
                id=new_event_id(),
                time=t,
                actor="t",
                node=node,
                vms=tuple(sorted(vms, key=lambda v: v.name)),
            ),
        ]
    if kind == 10:
        return [NodeFlagsSet(id=new_event_id(), time=t, actor="t", node=node, drained=bool(n % 2))]
    return [
        PolicySet(
            id=new_event_id(),
            time=t,
            actor="t",
            cluster_name="big",
            policy=ClusterPolicy(restart_limit=2 + n % 3),
        )
    ]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 50)), min_size=1, max_size=12))
def test_kept_views_equal_fresh_views(steps: list[tuple[int, int]]) -> None:
    state = BASE
    now = 1000.0
    for kind, n in steps:
        state = fold(state, [(state.revision + 1, e) for e in mutation(state, kind, n)])
        now += 0.4
        for name in NAMES:
            assert instance_row(state, name, now=now) == _instance_row(state, name, now)
        fresh_rows = [row_json(_row_dict(state, name, now)) for name in NAMES]
        assert json.loads(instance_rows_json(state, NAMES, now=now)) == fresh_rows
        listed = views.listed_instances(state, _admin())
        fresh = [views.instance(state, n, now=now) for n in listed]
        assert json.loads(views.instances_json(state, listed, now=now)) == json.loads(
            json.dumps(fresh)
        )
        status = status_dict(state, now=now)
        assert status["node_table"] == [asdict(r) for r in node_rows(state)]
        assert status["instances"]["total"] == len(NAMES)


def _row_dict(state: ClusterState, name: InstanceName, now: float) -> dict[str, Any]:
    return asdict(_instance_row(state, name, now))


def _admin() -> Principal:
    return Principal(name="t", role=Role.ADMIN)


def test_node_of_a_fresh_state_is_not_stale() -> None:
    """Two unrelated states in a row (a CLI reading one cluster, then another)."""
    other = converged_state(3, 9)
    assert len(status_dict(BASE, now=1.0)["node_table"]) == len(NODES)
    assert len(status_dict(other, now=1.0)["node_table"]) == 3
    assert instance_row(other, InstanceName("vm00000"), now=1.0).primary == NodeName("node001")
