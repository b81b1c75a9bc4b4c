"""What the instance workers keep between passes stays bounded by the cluster: the
last observation they compare a node's next report with is forgotten when the node
leaves the cluster, and the plan inputs a pass reads are taken once (reused from the
skip check when the state is still the one it read)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import cast

from events.ids import NodeName, new_event_id
from events.model import NodeObserved, NodeRemoved
from events.projection import fold
from reactors.context import ReactorContext
from reactors.plans.inputs import plan_inputs
from reactors.prober import Prober
from reactors.workers import InstanceWorkers
from tests.support.states.big_cluster import converged_state

NODE = NodeName("node002")


def _workers(state: object) -> InstanceWorkers:
    ctx = SimpleNamespace(
        stopping=False,
        state=state,
        settings=SimpleNamespace(max_parallel_instances=4, resync_interval_s=60.0),
        now=time.time,
    )
    return InstanceWorkers(ctx=cast(ReactorContext, ctx), prober=cast(Prober, None))


def test_a_removed_node_is_forgotten() -> None:
    state = converged_state(4, 8)
    w = _workers(state)
    seen = NodeObserved(id=new_event_id(), time=2.0, actor="test", node=NODE)
    state = fold(state, [(state.revision + 1, seen)])
    w.on_event(seen, state)
    assert NODE in w._node_seen
    removed = NodeRemoved(id=new_event_id(), time=3.0, actor="test", node=NODE)
    state = fold(state, [(state.revision + 1, removed)])
    w.on_event(removed, state)
    assert NODE not in w._node_seen
    assert set(w._node_seen) <= set(state.desired.nodes)


def test_a_pass_after_a_failed_skip_check_reuses_its_inputs() -> None:
    state = converged_state(4, 8)
    name = sorted(state.desired.instances)[0]
    w = _workers(state)
    w._settled[name] = ("stale",)
    assert not w._unchanged(name)
    assert w._checked_state is state
    assert w._checked[name] == plan_inputs(state, name)


def test_inputs_checked_against_an_older_state_are_not_kept() -> None:
    state = converged_state(4, 8)
    first, second = sorted(state.desired.instances)[:2]
    w = _workers(state)
    w._settled[first] = ("stale",)
    assert not w._unchanged(first)
    newer = fold(
        state,
        [(state.revision + 1, NodeRemoved(id=new_event_id(), time=3.0, actor="test", node=NODE))],
    )
    w.ctx.state = newer
    w._settled[second] = ("stale",)
    assert not w._unchanged(second)
    assert w._checked_state is newer
    assert set(w._checked) == {second}
