"""One node loss read back from its events, the same way for the demo and the heal
bench (a named node, crashed at a known time) and for `/metrics` (the latest loss,
whichever node)."""

from __future__ import annotations

from events.ids import EventId, InstanceName, NodeName
from events.model import (
    Event,
    InstancePlaced,
    NodeFenced,
    NodeHealth,
    NodeHealthChanged,
    PlacementKind,
    StepSucceeded,
)
from orchestrator.heal_timeline import HealTimeline, build_timeline


def _placed(i: int, t: float, vm: str, kind: PlacementKind, superseded: str | None) -> Event:
    return InstancePlaced(
        id=EventId(str(i)),
        time=t,
        actor="r",
        instance=InstanceName(vm),
        primary=NodeName("node1"),
        secondary=NodeName("node3"),
        disks=(),
        kind=kind,
        superseded=NodeName(superseded) if superseded else None,
    )


def _loss_of_node2() -> list[Event]:
    n2 = NodeName("node2")
    return [
        NodeHealthChanged(id=EventId("0"), time=99.0, actor="r", node=n2, health=NodeHealth.ONLINE),
        NodeHealthChanged(
            id=EventId("1"), time=101.0, actor="r", node=n2, health=NodeHealth.SUSPECT
        ),
        NodeHealthChanged(id=EventId("2"), time=103.5, actor="r", node=n2, health=NodeHealth.LOST),
        NodeFenced(id=EventId("3"), time=104.0, actor="r", node=n2, method="agent"),
        _placed(4, 104.1, "vm1", PlacementKind.FAILOVER, "node2"),
        _placed(5, 104.1, "vm2", PlacementKind.FAILOVER, "node2"),
        StepSucceeded(id=EventId("6"), time=105.0, actor="r", key="instance/vm1", step="start-vm"),
        StepSucceeded(id=EventId("7"), time=105.5, actor="r", key="instance/vm2", step="start-vm"),
        StepSucceeded(id=EventId("8"), time=106.0, actor="r", key="instance/vm1", step="start-vm"),
        StepSucceeded(id=EventId("9"), time=106.0, actor="r", key="instance/vm9", step="start-vm"),
        _placed(10, 107.0, "vm1", PlacementKind.HEAL, None),
    ]


def test_a_named_node_loss_from_the_crash() -> None:
    tl = build_timeline(node="node2", crashed_at=100.0, events=list(enumerate(_loss_of_node2())))
    assert (tl.suspect_at, tl.lost_at, tl.fenced_at) == (101.0, 103.5, 104.0)
    assert tl.back_times() == [5.0, 5.5]  # vm1's second start and vm9 do not count
    assert tl.rel(tl.lost_at) == "+  3.50s"
    assert tl.reprotected == {"vm1": 107.0}


def test_the_latest_node_loss_from_its_first_sign() -> None:
    tl = HealTimeline()
    n3 = NodeName("node3")
    tl.on_event(
        NodeHealthChanged(id=EventId("a"), time=50.0, actor="r", node=n3, health=NodeHealth.SUSPECT)
    )
    for e in _loss_of_node2():
        tl.on_event(e)
    assert tl.node == "node2"
    assert tl.phases() == {
        "suspect": 0.0,
        "lost": 2.5,
        "fenced": 3.0,
        "first_back": 4.0,
        "last_back": 4.5,
    }
