"""The array allocator behind `corral capacity` (`reactors.placement.pair_scores`) against
the pair-by-pair allocator the placer uses (`reactors.placement.allocator.choose_pair`): on the
same clusters, allocation after allocation, both choose the same pair, and the
capacity they find is the same; the end state keeps N+1 by htools' rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from events.ids import EventId, InstanceName, NodeName
from events.model import DiskPlacement, InstanceDeclared, PlacementKind
from events.specs import DiskSpec, InstanceSpec, PowerState
from events.state import ClusterState
from reactors.htools.model import from_state
from reactors.htools.score import n1_failures, score
from reactors.htools.state import to_state
from reactors.naming import DiskNumbers, new_disks
from reactors.placement.allocator import PairChoice, choose_pair, new_instance
from reactors.placement.capacity import Spec, _probe, _with_placed, capacity
from reactors.placement.pair_scores import Allocator
from reactors.placement.pending import Choice, PendingModel
from reactors.placement.what_if import planned_placement, project
from tests.support.states.generated import generated, generated_cluster


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


def _mixed(n: int) -> InstanceSpec:
    """Instances of varied sizes, some stopped, some not auto-balanced."""
    return InstanceSpec(
        name=InstanceName(f"mixed{n:03d}"),
        memory_mib=(512, 1024, 2048, 4096)[n % 4],
        vcpus=1 + n % 3,
        disks=tuple(DiskSpec(size_mib=s) for s in ((10240,), (20480, 4096))[n % 2]),
        power=PowerState.STOPPED if n % 7 == 3 else PowerState.RUNNING,
        auto_balance=n % 5 != 4,
    )


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_one_allocator_for_instances_of_every_size(name: str) -> None:
    """The placer's pass: one array allocator for a run of different instances
    (some pinned to a primary or a secondary) chooses what `choose_pair` chooses
    on the state with every earlier choice folded in, with the same score."""
    state = CLUSTERS[name]()
    nodes = sorted(state.desired.nodes)
    alloc = Allocator(state=state)
    chosen = 0
    for n in range(60):
        spec = _mixed(n)
        if n % 9 == 2:
            spec = replace(spec, primary=NodeName(nodes[n % len(nodes)]))
        if n % 11 == 5:
            spec = replace(spec, secondary=NodeName(nodes[-1 - n % len(nodes)]))
        expected = choose_pair(state=state, spec=spec)
        pick = alloc.pick(new_instance(spec), primary=spec.primary, secondary=spec.secondary)
        if expected.primary is None or expected.secondary is None:
            assert pick is None, (n, expected.refusal)
            continue
        assert pick is not None, n
        assert (pick.primary, pick.secondary) == (expected.primary, expected.secondary), n
        alloc.place(pick, new_instance(spec))
        assert expected.score is not None
        assert alloc.total == pytest.approx(expected.score, abs=1e-9)
        state = _with_placed(state, [(spec, expected.primary, expected.secondary)])
        chosen += 1
    assert chosen >= 10, "the cluster should have room for some"


def test_pinned_to_an_unknown_node_fits_nowhere() -> None:
    state = generated(4, 10)
    spec = _mixed(1)
    alloc = Allocator(state=state)
    assert alloc.pick(new_instance(spec), primary="nosuchnode") is None
    assert alloc.pick(new_instance(spec), secondary="nosuchnode") is None


def test_pending_model_holds_only_while_the_cluster_is_its_own() -> None:
    state = _with_declared(generated(6, 20), _mixed(1))
    spec = state.desired.instances[InstanceName("mixed001")]
    model = PendingModel(state)
    first = model.choose(spec)
    assert first is not None and first.reason.startswith("allocator: ")
    assert model.holds(state)
    # An instance declared meanwhile changes nothing the choice rests on.
    declared = _with_declared(state, _mixed(2))
    assert model.holds(declared)
    # Once folded, the model goes on from the state with the choice in it.
    placed = _with_placed(declared, [(spec, first.primary, first.secondary)])
    assert model.adopt(placed, [first.instance])
    second = model.choose(placed.desired.instances[InstanceName("mixed002")])
    assert second is not None
    assert second == _as_choice(choose_pair(state=placed, spec=_mixed(2)), second)
    # A drained node (or a spec changed, or a placement by anyone else) does not.
    assert not model.holds(_drained_second(placed))
    bigger = replace(spec, memory_mib=spec.memory_mib * 2)
    assert not model.holds(_with_declared(placed, bigger))
    other = _mixed(3)
    assert not model.holds(_with_placed(placed, [(other, first.secondary, first.primary)]))


def test_pending_model_leaves_tagged_instances_to_choose_pair() -> None:
    model = PendingModel(generated(4, 10))
    assert model.choose(replace(_mixed(1), tags=frozenset({"service:web"}))) is None


def test_disk_numbers_in_a_pass_are_those_new_disks_gives_one_by_one() -> None:
    state = generated(6, 20)
    numbers = DiskNumbers.of(state)
    for n in range(5):
        spec = _mixed(n)
        disks = numbers.take(spec.disks)
        assert disks == new_disks(state=state, disks=spec.disks)
        nodes = sorted(state.desired.nodes)
        state = _with_placed_disks(state, spec, NodeName(nodes[0]), NodeName(nodes[1]), disks)


def _with_declared(state: ClusterState, spec: InstanceSpec) -> ClusterState:
    return project(
        state,
        [
            InstanceDeclared(
                id=EventId(f"decl-{spec.name}-{spec.memory_mib}"), time=0.0, actor="t", spec=spec
            )
        ],
    )


def _with_placed_disks(
    state: ClusterState,
    spec: InstanceSpec,
    primary: NodeName,
    secondary: NodeName,
    disks: tuple[DiskPlacement, ...],
) -> ClusterState:
    return project(
        _with_declared(state, spec),
        [
            planned_placement(
                instance=spec.name,
                primary=primary,
                secondary=secondary,
                disks=disks,
                kind=PlacementKind.INITIAL,
                actor="t",
            )
        ],
    )


def _as_choice(choice: PairChoice, got: Choice) -> Choice:
    assert choice.primary is not None and choice.secondary is not None
    assert choice.score == pytest.approx(got.score, abs=1e-9)
    return replace(got, primary=choice.primary, secondary=choice.secondary)
