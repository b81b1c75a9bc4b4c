"""Node-loss decisions on hand-built states: partition vs death (rule 5), and which
instances may fail over (rule 2)."""

from __future__ import annotations

from dataclasses import replace

from events.model import NodeHealth
from reactors.plans.heal import assess_unreachable, instances_needing_new_secondary, plan_failovers
from tests.support.plan_states import LV, WEB, A, B, online, res, state


def test_peer_still_connected_means_partitioned_not_lost() -> None:
    st = state(
        {
            A: online("a", health=NodeHealth.SUSPECT),
            B: online(
                "b", volumes=LV, drbd=(res("Secondary", "UpToDate", "a", peer_role="Primary"),)
            ),
        }
    )
    verdict = assess_unreachable(state=st, node=A)
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
    assert assess_unreachable(state=st, node=A).health == NodeHealth.LOST


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
    assert not decisions and "Inconsistent" in refusals[0].reason


def test_instances_with_a_fenced_secondary_need_a_new_one() -> None:
    st = state({A: online("a"), B: online("b", health=NodeHealth.FENCED)})
    assert instances_needing_new_secondary(state=st) == [WEB]
