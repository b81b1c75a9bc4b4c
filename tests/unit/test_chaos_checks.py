"""The chaos run's invariants fail when they should: a fence of a node a
reachable majority vouched for (and not one of a node whose links were down, or
seen from the minority side), a job step run twice by one runner, a migration
driven without a job of its own. On the simulated fabric, driven with the real
drbdadm argv."""

from __future__ import annotations

import time

import pytest

from events.ids import EventId, JobId
from events.model import JobSubmitted, JobUpdated
from simulators.fabric import Fabric, Host
from simulators.shell import run_line
from tests.support.chaos.chaos_checks import (
    FenceWatch,
    check_hosts,
    job_step_repeats,
    migrations_driven_twice,
)

RES = """resource r0 {
  net { protocol C; allow-two-primaries no; }
  on a { node-id 0; address 10.0.0.1:7789; device /dev/drbd0 minor 0;
         disk /dev/vg/r0; meta-disk internal; }
  on b { node-id 1; address 10.0.0.2:7789; device /dev/drbd0 minor 0;
         disk /dev/vg/r0; meta-disk internal; }
}
"""


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def mirrored(res: str = RES) -> Fabric:
    """Hosts a, b, c; r0 mirrored and connected between a and b."""
    fabric = Fabric()
    for name in ("a", "b", "c"):
        host = fabric.add_host(
            Host(name=name, cpus=2, memory_mib=4096, vg_name="vg", vg_size_mib=4096)
        )
        if name != "c":
            for line, stdin in (
                ("lvcreate -L 512m -n r0 vg", ""),
                ("tee /etc/drbd.d/r0.res", res),
                ("drbdadm create-md --force r0", ""),
                ("drbdadm up r0", ""),
            ):
                assert run_line(fabric, host, line, stdin.encode()).rc == 0
    fabric.tick()
    assert fabric.connected("b", "r0")
    return fabric


def watched(fabric: Fabric) -> tuple[FenceWatch, Clock]:
    clock = Clock()
    watch = FenceWatch(fabric=fabric, window_s=1.0, clock=clock)
    watch.sample()
    clock.now = 2.0
    watch.sample()
    return watch, clock


def test_a_fence_of_a_node_its_reachable_peer_vouches_for_is_caught() -> None:
    fabric = mirrored()
    watch, clock = watched(fabric)
    fabric.power_off("a")
    clock.now = 2.1
    watch.sample()
    assert watch.fences == ["a"]
    assert watch.violations and "a fenced" in watch.violations[0]


def test_a_fence_after_its_links_went_down_is_not_a_violation() -> None:
    fabric = mirrored()
    watch, clock = watched(fabric)
    fabric.cut_pairs.add(frozenset(("a", "b")))
    fabric.tick()
    clock.now = 5.0
    watch.sample()
    fabric.power_off("a")
    clock.now = 5.1
    watch.sample()
    assert watch.fences == ["a"] and watch.violations == []


def test_seen_from_the_minority_side_nobody_vouches() -> None:
    fabric = mirrored()
    fabric.isolated_from_orchestrator |= {"b", "c"}
    watch, clock = watched(fabric)
    fabric.power_off("a")
    clock.now = 2.1
    watch.sample()
    assert watch.violations == []


def test_a_crash_the_run_caused_is_no_fence() -> None:
    fabric = mirrored()
    watch, clock = watched(fabric)
    watch.expect_off("a")
    fabric.power_off("a")
    clock.now = 2.1
    watch.sample()
    assert watch.fences == [] and watch.violations == []


def updated(job: str, line: str) -> JobUpdated:
    return JobUpdated(
        id=EventId(line + job), time=time.time(), actor="r", job_id=JobId(job), log=line
    )


def test_a_job_step_run_twice_by_one_runner_is_caught() -> None:
    once = [updated("j1", "started instance.migrate"), updated("j1", "run stop-vm x on a")]
    assert job_step_repeats(once) == []
    resumed = [*once, updated("j1", "resumed by a new leader or after a restart")]
    assert job_step_repeats([*resumed, updated("j1", "run stop-vm x on a")]) == []
    twice = [*once, updated("j1", "run stop-vm x on a")]
    assert job_step_repeats(twice) == ["job j1: 'run stop-vm x on a' twice in one run"]
    assert job_step_repeats([*once, updated("j1", "started instance.migrate")]) == [
        "job j1 started twice"
    ]


def test_a_migration_without_a_job_of_its_own_is_caught() -> None:
    fabric = Fabric()
    job = JobSubmitted(
        id=EventId("s"),
        time=time.time(),
        actor="t",
        job_id=JobId("j1"),
        kind="instance.migrate",
        targets=("instance/vm1",),
    )
    fabric.record("a", "qmp migrate vm1")
    assert migrations_driven_twice(fabric, [job]) == []
    fabric.record("a", "qmp migrate vm1")
    assert migrations_driven_twice(fabric, [job]) == ["vm1 migrated 2 times by 1 jobs"]


def test_two_connected_primaries_only_while_both_allow_them() -> None:
    fabric = mirrored()
    for name in ("a", "b"):
        fabric.hosts[name].copies["r0"].role = "Primary"
    with pytest.raises(AssertionError, match="primary on connected"):
        check_hosts(fabric)
    migrating = mirrored(RES.replace("allow-two-primaries no", "allow-two-primaries yes"))
    for name in ("a", "b"):
        migrating.hosts[name].copies["r0"].role = "Primary"
    check_hosts(migrating)
