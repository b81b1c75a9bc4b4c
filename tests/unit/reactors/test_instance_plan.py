"""The instance planner's decisions on hand-built cluster states, above all the
safety rules: never start a VM that may run elsewhere, never promote a disk whose
peer may be primary, never discard data except on a superseded node."""

from __future__ import annotations

from dataclasses import replace

from events.ids import InstanceName
from events.model import (
    NodeHealth,
    VmObs,
    VolumeObs,
)
from events.specs import PowerState
from reactors.plans.instance import plan_instance
from reactors.plans.steps import StepKind
from tests.support.states.plan_states import LV, NOW, WEB, A, B, C, online, res, state


def kinds(plan: object) -> list[tuple[str, str]]:
    return [(s.kind.value, s.node) for s in plan.steps]  # type: ignore[attr-defined]


def test_fresh_instance_creates_disks_on_both_nodes() -> None:
    plan = plan_instance(state=state({A: online("a"), B: online("b")}), instance=WEB, now=NOW)
    assert kinds(plan) == [("create-disk", "a"), ("create-disk", "b")]
    disk = plan.steps[0].disk
    assert disk is not None and disk.resource == "web-d0"
    assert {h.node for h in disk.hosts} == {"a", "b"}


def test_new_pair_gets_initial_primary_then_vm_starts() -> None:
    fresh = {
        A: online(
            "a", volumes=LV, drbd=(res("Secondary", "Inconsistent", "b", peer_disk="Inconsistent"),)
        ),
        B: online(
            "b", volumes=LV, drbd=(res("Secondary", "Inconsistent", "a", peer_disk="Inconsistent"),)
        ),
    }
    plan = plan_instance(state=state(fresh), instance=WEB, now=NOW)
    assert kinds(plan) == [("drbd-initial-primary", "a")]
    synced = {
        A: online("a", volumes=LV, drbd=(res("Primary", "UpToDate", "b"),)),
        B: online("b", volumes=LV, drbd=(res("Secondary", "UpToDate", "a", peer_role="Primary"),)),
    }
    plan = plan_instance(state=state(synced), instance=WEB, now=NOW)
    assert kinds(plan) == [("start-vm", "a")]


def test_converged_when_running_on_primary_with_uptodate_pair() -> None:
    obs = {
        A: online(
            "a",
            volumes=LV,
            drbd=(res("Primary", "UpToDate", "b"),),
            vms=(VmObs(name="web", pid=5, status="running", memory_mib=1024, vcpus=1),),
        ),
        B: online("b", volumes=LV, drbd=(res("Secondary", "UpToDate", "a", peer_role="Primary"),)),
    }
    plan = plan_instance(state=state(obs), instance=WEB, now=NOW)
    assert plan.converged and not plan.steps and not plan.degraded


def test_vm_on_the_wrong_node_is_stopped_before_anything_else() -> None:
    obs = {
        A: online("a", volumes=LV, drbd=(res("Secondary", "UpToDate", "b"),)),
        B: online(
            "b",
            volumes=LV,
            drbd=(res("Primary", "UpToDate", "a"),),
            vms=(VmObs(name="web", pid=5, status="running"),),
        ),
    }
    plan = plan_instance(state=state(obs), instance=WEB, now=NOW)
    assert kinds(plan) == [("stop-vm", "b")]


def test_no_start_while_old_primary_unreachable_and_not_fenced() -> None:
    # Failover decided (primary now b) but a is only unreachable: rule 1 and 2 hold.
    obs = {
        A: online(
            "a",
            health=NodeHealth.LOST,
            volumes=LV,
            drbd=(res("Primary", "UpToDate", "b"),),
            vms=(VmObs(name="web", pid=5, status="running"),),
        ),
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
    plan = plan_instance(state=state(obs, primary=B, secondary=A), instance=WEB, now=NOW)
    assert plan.steps == ()
    assert any("unreachable a" in w for w in plan.waiting)


def test_after_fence_the_secondary_is_promoted_and_started() -> None:
    fenced = online(
        "a",
        health=NodeHealth.FENCED,
        volumes=LV,
        drbd=(res("Primary", "UpToDate", "b"),),
        vms=(VmObs(name="web", pid=5, status="running"),),
    )
    b_view = res(
        "Secondary", "UpToDate", "a", conn="Connecting", peer_role="Unknown", peer_disk="DUnknown"
    )
    st = state(
        {A: fenced, B: online("b", volumes=LV, drbd=(b_view,))},
        primary=B,
        secondary=A,
        superseded=A,
    )
    plan = plan_instance(state=st, instance=WEB, now=NOW)
    assert kinds(plan) == [("drbd-primary", "b")]
    promoted = replace(b_view, role="Primary")
    st = state(
        {A: fenced, B: online("b", volumes=LV, drbd=(promoted,))},
        primary=B,
        secondary=A,
        superseded=A,
    )
    plan = plan_instance(state=st, instance=WEB, now=NOW)
    assert kinds(plan) == [("start-vm", "b")]
    assert plan.degraded


def test_not_uptodate_secondary_is_never_promoted() -> None:
    fenced = online("a", health=NodeHealth.FENCED)
    b_view = res(
        "Secondary", "Outdated", "a", conn="Connecting", peer_role="Unknown", peer_disk="DUnknown"
    )
    st = state({A: fenced, B: online("b", volumes=LV, drbd=(b_view,))}, primary=B, secondary=A)
    plan = plan_instance(state=st, instance=WEB, now=NOW)
    assert plan.steps == ()
    assert any("not UpToDate" in w for w in plan.waiting)


def test_split_brain_between_unfenced_nodes_alerts_and_keeps_both() -> None:
    obs = {
        A: online(
            "a",
            volumes=LV,
            drbd=(
                res(
                    "Primary",
                    "UpToDate",
                    "b",
                    conn="StandAlone",
                    peer_role="Unknown",
                    peer_disk="DUnknown",
                ),
            ),
        ),
        B: online(
            "b",
            volumes=LV,
            drbd=(
                res(
                    "Secondary",
                    "UpToDate",
                    "a",
                    conn="StandAlone",
                    peer_role="Unknown",
                    peer_disk="DUnknown",
                ),
            ),
        ),
    }
    plan = plan_instance(state=state(obs), instance=WEB, now=NOW)
    assert not any(s.kind == StepKind.DRBD_DISCARD for s in plan.steps)
    assert plan.alerts and "split brain" in plan.alerts[0][1]


def test_returning_superseded_node_discards_its_copy() -> None:
    obs = {
        A: online("a", volumes=LV),  # rebooted: LV there, DRBD down
        B: online(
            "b",
            volumes=LV,
            drbd=(
                res(
                    "Primary",
                    "UpToDate",
                    "a",
                    conn="Connecting",
                    peer_role="Unknown",
                    peer_disk="DUnknown",
                ),
            ),
            vms=(VmObs(name="web", pid=5, status="running"),),
        ),
    }
    st = state(obs, primary=B, secondary=A, superseded=A)
    plan = plan_instance(state=st, instance=WEB, now=NOW)
    assert kinds(plan) == [("drbd-discard", "a")]


def test_removed_instance_is_stopped_then_its_disks_removed() -> None:
    obs = {
        A: online(
            "a",
            volumes=LV,
            drbd=(res("Primary", "UpToDate", "b"),),
            vms=(VmObs(name="web", pid=5, status="running"),),
        ),
        B: online("b", volumes=LV, drbd=(res("Secondary", "UpToDate", "a"),)),
    }
    st = state(obs)
    gone = replace(st, desired=replace(st.desired, instances={}), placements={})
    assert kinds(plan_instance(state=gone, instance=WEB, now=NOW)) == [("stop-vm", "a")]
    stopped = replace(gone, observed={A: replace(obs[A], vms=()), B: obs[B]})
    assert kinds(plan_instance(state=stopped, instance=WEB, now=NOW)) == [
        ("remove-disk", "a"),
        ("remove-disk", "b"),
    ]


def test_unknown_instance_leftovers_are_never_touched() -> None:
    st = state({A: online("a", volumes=(VolumeObs(vg="corral", name="other-d0", size_mib=1),))})
    plan = plan_instance(state=st, instance=InstanceName("other"), now=NOW)
    assert plan.steps == () and plan.converged


def test_old_secondary_removed_only_after_new_pair_is_uptodate() -> None:
    syncing = {
        A: online(
            "a",
            volumes=LV,
            drbd=(res("Primary", "UpToDate", "c", peer_disk="Inconsistent"),),
            vms=(VmObs(name="web", pid=5, status="running"),),
        ),
        B: online("b", volumes=LV, drbd=(res("Secondary", "UpToDate", "a", conn="Connecting"),)),
        C: online(
            "c", volumes=LV, drbd=(res("Secondary", "Inconsistent", "a", peer_role="Primary"),)
        ),
    }
    plan = plan_instance(state=state(syncing, secondary=C), instance=WEB, now=NOW)
    assert ("remove-disk", "b") not in kinds(plan)
    done = dict(syncing)
    done[A] = online(
        "a",
        volumes=LV,
        drbd=(res("Primary", "UpToDate", "c"),),
        vms=(VmObs(name="web", pid=5, status="running"),),
    )
    done[C] = online(
        "c", volumes=LV, drbd=(res("Secondary", "UpToDate", "a", peer_role="Primary"),)
    )
    plan = plan_instance(state=state(done, secondary=C), instance=WEB, now=NOW)
    assert kinds(plan) == [("remove-disk", "b")]


def test_stopped_instance_keeps_disks_and_demotes() -> None:
    obs = {
        A: online("a", volumes=LV, drbd=(res("Primary", "UpToDate", "b"),)),
        B: online("b", volumes=LV, drbd=(res("Secondary", "UpToDate", "a", peer_role="Primary"),)),
    }
    plan = plan_instance(state=state(obs, power=PowerState.STOPPED), instance=WEB, now=NOW)
    assert kinds(plan) == [("drbd-secondary", "a")]


def test_stopped_instance_new_pair_gets_its_initial_sync_then_demotes() -> None:
    # Declared stopped from its creation: the fresh pair is still made UpToDate on
    # the primary (the initial sync), then put back to Secondary while it syncs.
    fresh = {
        A: online(
            "a", volumes=LV, drbd=(res("Secondary", "Inconsistent", "b", peer_disk="Inconsistent"),)
        ),
        B: online(
            "b", volumes=LV, drbd=(res("Secondary", "Inconsistent", "a", peer_disk="Inconsistent"),)
        ),
    }
    plan = plan_instance(state=state(fresh, power=PowerState.STOPPED), instance=WEB, now=NOW)
    assert kinds(plan) == [("drbd-initial-primary", "a")]
    syncing = {
        A: online(
            "a", volumes=LV, drbd=(res("Primary", "UpToDate", "b", peer_disk="Inconsistent"),)
        ),
        B: online(
            "b",
            volumes=LV,
            drbd=(res("Secondary", "Inconsistent", "a", peer_role="Primary"),),
        ),
    }
    plan = plan_instance(state=state(syncing, power=PowerState.STOPPED), instance=WEB, now=NOW)
    assert kinds(plan) == [("drbd-secondary", "a")] and not plan.converged
    synced = {
        A: online("a", volumes=LV, drbd=(res("Secondary", "UpToDate", "b"),)),
        B: online("b", volumes=LV, drbd=(res("Secondary", "UpToDate", "a"),)),
    }
    plan = plan_instance(state=state(synced, power=PowerState.STOPPED), instance=WEB, now=NOW)
    assert plan.converged and not plan.steps


def test_a_resource_up_under_another_minor_is_not_the_placed_pair() -> None:
    # A pair just removed (a refused hotplug) and added again under a new minor: the
    # last probe still shows the old one, Primary and UpToDate. Taking it for the new
    # pair would start the VM on (or plug) a /dev/drbdN that does not exist.
    old = replace(res("Primary", "UpToDate", "b"), minor=7)
    obs = {
        A: online("a", volumes=LV, drbd=(old,)),
        B: online("b", volumes=LV, drbd=(replace(res("Secondary", "UpToDate", "a"), minor=7),)),
    }
    plan = plan_instance(state=state(obs), instance=WEB, now=NOW)
    assert plan.steps == () and not plan.converged
    assert any("minor 7, placed as 0" in w for w in plan.waiting), plan.waiting
