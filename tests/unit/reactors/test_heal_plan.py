"""Node-loss decisions on hand-built states: partition vs death (rule 5), no
evidence vs death and the majority an orchestrator needs to judge (rule 7), the
fencing caps, and which instances may fail over (rule 2)."""

from __future__ import annotations

from dataclasses import replace

from events.ids import NodeName
from events.model import NodeHealth, VmObs
from events.state import ClusterState
from reactors.plans.heal import (
    Reach,
    assess_unreachable,
    cluster_members,
    fencing_held_back,
    instances_needing_new_secondary,
    needs_tiebreaker,
    plan_failovers,
    runs_again,
)
from tests.support.states.plan_states import LV, WEB, A, B, C, node, online, res, state


def test_peer_still_connected_means_partitioned_not_lost() -> None:
    st = state(
        {
            A: online("a", health=NodeHealth.SUSPECT),
            B: online(
                "b", volumes=LV, drbd=(res("Secondary", "UpToDate", "a", peer_role="Primary"),)
            ),
        }
    )
    verdict = assess_unreachable(state=st, node=A, reporting={B})
    assert verdict.health == NodeHealth.PARTITIONED
    assert verdict.seen_by == ("b",)


def test_peer_lost_the_link_too_means_lost() -> None:
    st = state(
        {
            A: online("a", health=NodeHealth.SUSPECT),
            B: online(
                "b",
                volumes=LV,
                drbd=(
                    res(
                        "Secondary",
                        "UpToDate",
                        "a",
                        conn="Connecting",
                        peer_role="Unknown",
                        peer_disk="DUnknown",
                    ),
                ),
            ),
        }
    )
    assert assess_unreachable(state=st, node=A, reporting={B}).health == NodeHealth.LOST
    # The same report, read before A fell silent, is not evidence: unknown.
    assert assess_unreachable(state=st, node=A, reporting=set()).health == NodeHealth.UNKNOWN


def test_failover_only_to_uptodate_secondary() -> None:
    good = state(
        {
            A: online("a", health=NodeHealth.FENCED),
            B: online(
                "b", volumes=LV, drbd=(res("Secondary", "UpToDate", "a", conn="Connecting"),)
            ),
        }
    )
    decisions, refusals = plan_failovers(state=good, node=A)
    assert [(d.instance, d.new_primary) for d in decisions] == [(WEB, B)] and not refusals
    bad = replace(
        good,
        observed={
            **good.observed,
            B: online(
                "b", volumes=LV, drbd=(res("Secondary", "Inconsistent", "a", conn="Connecting"),)
            ),
        },
    )
    decisions, refusals = plan_failovers(state=bad, node=A)
    assert not decisions
    assert refusals[0].reason.startswith("its data is only on a (fenced): the copy of web-d0 on b")
    assert "is Inconsistent, its sync from a not finished" in refusals[0].reason
    # Not even up there (its copy was not built yet): said so, not promoted either.
    bare = replace(bad, observed={**bad.observed, B: online("b", volumes=LV)})
    decisions, refusals = plan_failovers(state=bare, node=A)
    assert not decisions and "no copy of web-d0 is up on b" in refusals[0].reason


def test_a_reason_ends_once_the_instance_runs_again() -> None:
    st = state({A: online("a", health=NodeHealth.FENCED), B: online("b")})
    assert not runs_again(st, WEB)  # its primary is fenced
    back = replace(
        st,
        observed={**st.observed, A: online("a", vms=(VmObs(name="web", pid=5, status="running"),))},
    )
    assert runs_again(back, WEB)


def test_instances_with_a_fenced_secondary_need_a_new_one() -> None:
    st = state({A: online("a"), B: online("b", health=NodeHealth.FENCED)})
    assert instances_needing_new_secondary(state=st) == [WEB]


def _lost_link_state() -> ClusterState:
    return state(
        {
            A: online("a", health=NodeHealth.SUSPECT),
            B: online(
                "b", volumes=LV, drbd=(res("Secondary", "UpToDate", "a", conn="Connecting"),)
            ),
        }
    )


def test_no_reachable_peer_is_unknown_never_dead() -> None:
    st = _lost_link_state()
    # B is the only DRBD peer; unreachable (not reporting), it says nothing.
    verdict = assess_unreachable(state=st, node=A, reporting={C})
    assert verdict.health == NodeHealth.UNKNOWN and "not dead" in verdict.detail


def test_a_majority_is_strict() -> None:
    five = frozenset(NodeName(f"n{i}") for i in range(5))
    assert Reach(members=five, reachable=frozenset(sorted(five)[:3])).majority
    assert not Reach(members=five, reachable=frozenset(sorted(five)[:2])).majority
    four = frozenset(sorted(five)[:4])
    assert not Reach(members=four, reachable=frozenset(sorted(four)[:2])).majority
    assert not Reach(members=four, reachable=frozenset()).majority
    assert not Reach(members=frozenset(), reachable=frozenset()).majority
    cut_off = Reach(members=five, reachable=frozenset({NodeName("n0")}))
    assert "reaches 1 of 5" in cut_off.isolation_message()
    assert "n4" in cut_off.isolation_message()


def test_offline_nodes_are_not_members_and_two_need_a_tiebreaker() -> None:
    three = _lost_link_state()
    assert cluster_members(three) == {A, B, C} and not needs_tiebreaker(three)
    offline = replace(node(C), offline=True)
    two = replace(three, desired=replace(three.desired, nodes={**three.desired.nodes, C: offline}))
    assert cluster_members(two) == {A, B} and needs_tiebreaker(two)


def test_fencing_is_capped() -> None:
    names = [NodeName(f"n{i}") for i in range(5)]
    members = frozenset(names)
    base = state({n: online(n) for n in names})

    def with_health(**health: NodeHealth):  # type: ignore[no-untyped-def]
        observed = {**base.observed}
        for n, h in health.items():
            observed[NodeName(n)] = replace(observed[NodeName(n)], health=h)
        return replace(base, observed=observed)

    assert fencing_held_back(state=base, node=names[0], members=members, at_once=1) is None
    one_at_a_time = with_health(n1=NodeHealth.LOST)
    why = fencing_held_back(state=one_at_a_time, node=names[0], members=members, at_once=1)
    assert why is not None and "n1 is being fenced" in why
    assert fencing_held_back(state=one_at_a_time, node=names[0], members=members, at_once=2) is None
    # Two of five already fenced: a third would leave two, below the majority of three.
    two_down = with_health(n1=NodeHealth.FENCED, n2=NodeHealth.FENCED)
    why = fencing_held_back(state=two_down, node=names[0], members=members, at_once=1)
    assert why is not None and "fewer than a majority" in why
    one_down = with_health(n1=NodeHealth.FENCED)
    assert fencing_held_back(state=one_down, node=names[0], members=members, at_once=1) is None
