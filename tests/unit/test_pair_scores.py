"""The array allocator behind `corral capacity` (`reactors.placement.pair_scores`) against
the pair-by-pair allocator the placer uses (`reactors.placement.allocator.choose_pair`): on the
same clusters, allocation after allocation, both choose the same pair, and the
capacity they find is the same; the end state keeps N+1 by htools' rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from events.ids import NodeName
from events.state import ClusterState
from reactors.htools.model import from_state
from reactors.htools.score import n1_failures, score
from reactors.htools.state import to_state
from reactors.placement.allocator import choose_pair, new_instance
from reactors.placement.capacity import Spec, _probe, _with_placed, capacity
from reactors.placement.pair_scores import Allocator
from tests.support.generated import generated, generated_cluster


def _pair_by_pair(state: ClusterState, spec: Spec) -> list[tuple[NodeName, NodeName]]:
    chosen: list[tuple[NodeName, NodeName]] = []
    while True:
        inst = _probe(spec, len(chosen) + 1)
        choice = choose_pair(state=state, spec=inst)
        if choice.primary is None or choice.secondary is None:
            return chosen
        chosen.append((choice.primary, choice.secondary))
        state = _with_placed(state, [(inst, choice.primary, choice.secondary)])


def _arrays(state: ClusterState, spec: Spec) -> list[tuple[NodeName, NodeName]]:
    alloc = Allocator.of(state=state, inst=new_instance(_probe(spec, 0)))
    assert alloc is not None
    chosen = []
    while (pick := alloc.pick()) is not None:
        alloc.place(pick)
        chosen.append((pick.primary, pick.secondary))
    return chosen


def _drained_second(state: ClusterState) -> ClusterState:
    nodes = dict(state.desired.nodes)
    name = sorted(nodes)[1]
    nodes[name] = replace(nodes[name], drained=True)
    return replace(state, desired=replace(state.desired, nodes=nodes))


CLUSTERS = {
    "4 nodes, seed mix": lambda: generated(4, 30, big_share=0.0),
    "8 nodes, some big": lambda: generated(8, 60, big_share=0.25),
    "12 nodes, one drained": lambda: _drained_second(generated(12, 100, big_share=0.25)),
    "6+2 htools nodes with tags": lambda: to_state(
        cluster=generated_cluster(seed=3, full=6, empty=2, instances=60, drained=True)
    ),
}


@pytest.mark.parametrize("name", sorted(CLUSTERS))
@pytest.mark.parametrize(
    "spec",
    [
        Spec(memory_mib=1024, disk_mib=20 * 1024, vcpus=1),
        Spec(memory_mib=4096, disk_mib=80 * 1024, vcpus=2),
    ],
    ids=["1G", "4G"],
)
def test_same_pairs_as_the_placer(name: str, spec: Spec) -> None:
    state = CLUSTERS[name]()
    expected = _pair_by_pair(state, spec)
    assert expected, "the cluster should have room for some"
    assert _arrays(state, spec) == expected


def test_capacity_end_state_is_n1_safe_and_scored_like_the_placer() -> None:
    state = to_state(cluster=generated_cluster(seed=5, full=8, empty=3, instances=90))
    spec = Spec(memory_mib=1024, disk_mib=20 * 1024, vcpus=1)
    result = capacity(state=state, specs=(spec,))
    assert result.total == len(_pair_by_pair(state, spec))
    final = from_state(state=result.state)
    assert n1_failures(final) == ()
    # The tier ended with the placer's own refusal, naming the failing resources.
    assert result.tiers[0].stopped_by.startswith("no node pair can take")
    assert score(final).total >= 0


def test_tagged_spec_goes_pair_by_pair() -> None:
    state = generated(4, 10)
    inst = replace(
        _probe(Spec(memory_mib=1024, disk_mib=10240, vcpus=1), 1), tags=frozenset({"service:web"})
    )
    assert Allocator.of(state=state, inst=new_instance(inst)) is None


@pytest.mark.parametrize("nodes", [0, 1])
def test_no_pair_at_all_is_a_refusal_not_a_crash(nodes: int) -> None:
    state = generated(nodes, 0) if nodes else ClusterState()
    result = capacity(state=state, specs=(Spec(memory_mib=1024, disk_mib=10240, vcpus=1),))
    assert result.total == 0
    assert result.tiers[0].stopped_by.startswith("no node pair can take")
