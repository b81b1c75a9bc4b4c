"""Capacity and rolling-reboot planning, on generated clusters and side by side
with Ganeti's hspace and hroller reading the same htools text file; and the CLI
forms of both (`corral capacity`, `corral node reboot-plan`, offline on a file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from events.ids import NodeName
from events.state import ClusterState
from reactors.htools.model import from_state
from reactors.htools.state import HTOOLS_KEEP_FREE_MIB, spindle_room, to_state
from reactors.htools.text import parse, render
from reactors.placement.capacity import NewNode, Spec, capacity
from reactors.placement.reboot import plan_reboots
from tests.support.states.generated import generated
from tests.support.tools import require_tool

HTOOLS = "/usr/lib/ganeti/3.0/usr/bin"


def htools_file(state: ClusterState, path: Path) -> Path:
    """The htools text of `state`, with node1 as the master (hroller needs one)."""
    lines = render(from_state(state=state)).split("\n")
    for i, line in enumerate(lines):
        if line.startswith("node1|"):
            cols = line.split("|")
            cols[7] = "M"
            lines[i] = "|".join(cols)
    path.write_text("\n".join(lines))
    return path


@pytest.mark.parametrize(("nodes", "count"), [(4, 30), (8, 60), (12, 150)])
def test_reboot_groups_are_safe_and_no_more_than_hroller(
    tmp_path: Path, nodes: int, count: int
) -> None:
    state = generated(nodes, count)
    plan = plan_reboots(state=state)
    planned = [n for g in plan.groups for n in g.nodes]
    assert sorted(planned) == sorted(state.desired.nodes)  # every node, once
    for group in plan.groups:
        down = set(group.nodes)
        for name, p in state.placements.items():
            assert not {p.primary, p.secondary} <= down, f"{name} loses both copies"
        incoming: dict[NodeName, int] = {}
        for move in group.migrations:
            assert move.target not in down
            incoming[move.target] = (
                incoming.get(move.target, 0) + state.desired.instances[move.instance].memory_mib
            )
        used = {
            n: sum(
                state.desired.instances[i].memory_mib
                for i, p in state.placements.items()
                if p.primary == n
            )
            for n in state.desired.nodes
        }
        for target, mem in incoming.items():
            spec = state.desired.nodes[target]
            assert used[target] + mem <= spec.memory_mib - spec.host_memory_mib
    hroller = require_tool(f"{HTOOLS}/hroller", "ganeti-htools-3.0")
    f = htools_file(state, tmp_path / "cluster.txt")
    out = subprocess.run(
        [hroller, "-t", str(f), "--no-headers"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    theirs = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(plan.groups) <= len(theirs), (plan.groups, theirs)


@pytest.mark.parametrize(("nodes", "count"), [(6, 40), (10, 90)])
def test_reboot_groups_with_evacuation_empty_their_nodes(
    tmp_path: Path, nodes: int, count: int
) -> None:
    """With --evacuate every group is checked the way it will be carried out:
    after its moves no instance has a copy on the group's nodes, every instance
    still has two copies and N+1 holds; compared with `hroller --full-evacuation`."""
    from reactors.htools.score import n1_failures
    from reactors.placement.what_if import planned_placement, project

    state = generated(nodes, count)
    plan = plan_reboots(state=state, evacuate=True)
    planned = [n for g in plan.groups for n in g.nodes]
    assert len(planned) == len(set(planned))
    assert sorted(planned + [s.split(":")[0] for s in plan.skipped]) == sorted(state.desired.nodes)
    assert plan.groups
    for group in plan.groups:
        down = set(group.nodes)
        after = state
        for move in group.evacuation:
            p = after.placements[move.instance]
            after = project(
                after,
                [
                    planned_placement(
                        instance=move.instance,
                        primary=move.new_primary,
                        secondary=move.new_secondary,
                        disks=p.disks,
                        kind=p.kind,
                    )
                ],
            )
        for name, p in after.placements.items():
            assert p.primary not in down and p.secondary not in down, (name, group.nodes)
            assert p.primary != p.secondary
        assert n1_failures(from_state(state=after)) == ()
        touched = {n for n, p in state.placements.items() if {p.primary, p.secondary} & down}
        assert {m.instance for m in group.evacuation} == touched
    hroller = require_tool(f"{HTOOLS}/hroller", "ganeti-htools-3.0")
    f = htools_file(state, tmp_path / "cluster.txt")
    out = subprocess.run(
        [hroller, "-t", str(f), "--no-headers", "--full-evacuation"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    theirs = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(plan.groups) <= len(theirs), ([g.nodes for g in plan.groups], theirs)


def hspace_count(tool: str, f: Path, spec: Spec) -> int:
    out = subprocess.run(
        [
            tool,
            "-t",
            str(f),
            f"--standard-alloc={spec.disk_mib},{spec.memory_mib},{spec.vcpus}",
            "--machine-readable",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    fields = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return int(fields["HTS_FIN_INST_CNT"]) - int(fields["HTS_INI_INST_CNT"])


@pytest.mark.parametrize(
    ("nodes", "count", "big_share"), [(4, 30, 0.0), (4, 30, 0.25), (8, 60, 0.25), (12, 100, 0.0)]
)
def test_capacity_fits_at_least_as_many_as_hspace(
    tmp_path: Path, nodes: int, count: int, big_share: float
) -> None:
    state = generated(nodes, count, big_share=big_share)
    spec = Spec(memory_mib=1024, disk_mib=20 * 1024, vcpus=1)
    ours = capacity(state=state, specs=(spec,))
    final = ours.state
    # N+1 holds after every allocation: check the end state with the htools rule.
    from reactors.htools.score import n1_failures

    assert n1_failures(from_state(state=final)) == ()
    hspace = require_tool(f"{HTOOLS}/hspace", "ganeti-htools-3.0")
    f = htools_file(state, tmp_path / "c.txt")
    theirs = hspace_count(hspace, f, spec)
    assert ours.total >= theirs, (ours.total, theirs)
    # On the file, with htools' own limits (the spindle ratio, 1 MiB kept
    # free), the count is hspace's.
    on_file = subprocess.run(
        [
            *(sys.executable, "-m", "orchestrator.cli.main", "capacity"),
            *("--htools", str(f), "--spec", "1G,20G,1", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert on_file.returncode == 0, on_file.stderr
    assert json.loads(on_file.stdout)["total"] == theirs


def test_capacity_with_hypothetical_nodes_and_the_cli(tmp_path: Path) -> None:
    state = generated(4, 30)
    spec = Spec(memory_mib=1024, disk_mib=20 * 1024, vcpus=1)
    base = capacity(state=state, specs=(spec,)).total
    more = capacity(
        state=state,
        specs=(spec,),
        add_nodes=(NewNode(memory_mib=24 * 1024, disk_mib=730 * 1024, cpus=8),) * 2,
    )
    assert more.added_nodes == ("new1", "new2")
    assert more.total > base
    f = htools_file(state, tmp_path / "c.txt")
    corral = [sys.executable, "-m", "orchestrator.cli.main"]
    out = subprocess.run(
        [*corral, "capacity", "--htools", str(f), "--spec", "1G,20G,1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    # the file keeps htools' limits, which corral's own cluster does not have
    cluster = parse(f.read_text())
    limited = capacity(
        state=to_state(cluster=cluster),
        specs=(spec,),
        spindle_room=spindle_room(cluster=cluster),
        keep_free_mib=HTOOLS_KEEP_FREE_MIB,
    ).total
    doc = json.loads(out.stdout)
    assert doc["total"] == limited <= base
    assert {n["name"] for n in doc["nodes"]} == set(state.desired.nodes)
    tiered = subprocess.run(
        [*corral, "capacity", "--htools", str(f), "--spec", "4G,40G,2", "--spec", "512M,10G,1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tiered.returncode == 0 and "total" in tiered.stdout
    bad = subprocess.run(
        [*corral, "capacity", "--htools", str(f), "--spec", "1G,lots,1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "--spec" in bad.stderr and "Traceback" not in bad.stderr
    rp = subprocess.run(
        [*corral, "node", "reboot-plan", "--htools", str(f), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rp.returncode == 0, rp.stderr
    groups = json.loads(rp.stdout)["groups"]
    assert sorted(n for g in groups for n in g["nodes"]) == sorted(state.desired.nodes)


def test_a_lab_sized_like_an_htools_file(tmp_path: Path) -> None:
    import argparse

    from simulators.cli import hosts_from_htools

    state = generated(8, 40)
    f = htools_file(state, tmp_path / "c.txt")
    hosts = hosts_from_htools(f.read_text(), source=str(f))
    assert [(h.name, h.memory_mib, h.disk_mib, h.cpus) for h in hosts] == [
        (n, s.memory_mib, s.disk_mib, s.cpus) for n, s in sorted(state.desired.nodes.items())
    ]
    broken = f.read_text().replace("|8|N|", "|eight|N|", 1)
    with pytest.raises(argparse.ArgumentTypeError, match=r"c.txt:\d+: not a node line"):
        hosts_from_htools(broken, source=str(f))
    up = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli.main",
            "sim",
            "up",
            "--from-htools",
            str(tmp_path / "no"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 1 and "--from-htools" in up.stderr
