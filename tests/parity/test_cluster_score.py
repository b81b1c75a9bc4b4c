"""Our hbal cluster score against the real Ganeti htools (3.0.2): seeded random
clusters of 4-20 heterogeneous nodes and 10-200 instances (exclusion tags, failure
domains, drained/offline nodes, stopped and offline instances, tight memory so N+1
fails) are rendered to htools' text format, `hinfo -t FILE -v -v -v` prints every
score component, and each must match ours within 1e-6; `hbal` must see the same
N+1-failing nodes. Also: render/parse round trips and `from_state` on a folded
event log."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from events.ids import EventId, InstanceName, NodeName
from events.model import (
    DiskPlacement,
    Event,
    InstanceDeclared,
    InstancePlaced,
    NodeDeclared,
    PolicySet,
)
from events.projection import fold_all
from events.specs import ClusterPolicy, DiskSpec, InstanceSpec, NodeSpec, PowerState
from reactors.htools.model import (
    BCluster,
    from_state,
)
from reactors.htools.score import WEIGHTS, n1_failures, score
from reactors.htools.text import parse, render
from tests.support.htools.htools_tools import hbal_initial, hinfo_components
from tests.support.states.generated import random_cluster
from tests.support.tools import require_tool

HTOOLS_BIN = "/usr/lib/ganeti/3.0/usr/bin"
PACKAGE = "ganeti-htools-3.0"
TOLERANCE = 1e-6

# --------------------------------------------------------------------------- generator


# --------------------------------------------------------------------------- htools


def assert_parity(*, cluster: BCluster, path: Path) -> float:
    path.write_text(render(cluster))
    theirs, their_total = hinfo_components(path=path)
    ours = score(cluster)
    assert set(theirs) == set(WEIGHTS), sorted(theirs)
    for name, value, weight in ours.components():
        their_value, their_weight = theirs[name]
        assert weight == their_weight, name
        assert abs(value - their_value) <= TOLERANCE, (name, value, their_value)
    assert abs(ours.total - their_total) <= TOLERANCE, (ours.total, their_total)
    return ours.total


# --------------------------------------------------------------------------- tests


SEEDS = list(range(24))


def test_score_matches_hinfo_on_random_clusters(tmp_path: Path) -> None:
    require_tool(f"{HTOOLS_BIN}/hinfo", PACKAGE)
    n1_seen = drained_seen = location_seen = 0
    for seed in SEEDS:
        cluster = random_cluster(seed=seed)
        try:
            assert_parity(cluster=cluster, path=tmp_path / f"c{seed}.data")
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc
        n1_seen += bool(n1_failures(cluster))
        drained_seen += any(n.drained for n in cluster.nodes)
        location_seen += score(cluster).location_score > 0
    # The generator must exercise what it is meant to.
    assert n1_seen >= 3 and drained_seen >= 3 and location_seen >= 3


def test_hbal_sees_the_same_score_and_n1_failures(tmp_path: Path) -> None:
    require_tool(f"{HTOOLS_BIN}/hbal", PACKAGE)
    for seed in SEEDS[:8]:
        cluster = random_cluster(seed=seed)
        path = tmp_path / f"c{seed}.data"
        path.write_text(render(cluster))
        their_score, their_bad = hbal_initial(path=path)
        assert abs(score(cluster).total - their_score) <= TOLERANCE, seed
        assert len(n1_failures(cluster)) == their_bad, seed


def test_render_parse_round_trip() -> None:
    for seed in SEEDS:
        cluster = random_cluster(seed=seed)
        back = parse(render(cluster))
        # The text format has no "drained": htools read it as offline.
        expected = replace(
            cluster,
            nodes=tuple(
                replace(n, offline=n.offline or n.drained, drained=False) for n in cluster.nodes
            ),
        )
        assert back == expected
        assert render(back) == render(cluster)
        assert score(back) == score(cluster)


def test_parse_reads_what_hbal_saves(tmp_path: Path) -> None:
    hbal = require_tool(f"{HTOOLS_BIN}/hbal", PACKAGE)
    cluster = random_cluster(seed=3)
    src, saved = tmp_path / "in.data", tmp_path / "out.data"
    src.write_text(render(cluster))
    subprocess.run(
        [hbal, "-t", str(src), "-l", "0", "-S", str(saved)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    # hbal -S appends ".original" / ".balanced" to the name it is given.
    back = parse((tmp_path / "out.data.original").read_text())
    assert abs(score(back).total - score(cluster).total) <= TOLERANCE
    assert {n.name for n in back.nodes} == {n.name for n in cluster.nodes}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("g|u|preferred|\n\nn1|1|1|1|1|1|1|N|u\n", "sections"),
        ("g|u|preferred|\n\nn1|x|1|1|1|1|1|N|u\n\n\n\n", "line 3"),
        ("g|u|preferred|\n\nn1|1|1|1|1|1|1|N|nope\n\n\n\n", "unknown group uuid"),
        ("g|u|preferred|\n\nn1|1|1|1|1|1|1|N|u|1||Q\n\n\n\n", "exclusive_storage"),
        ("g|u|preferred|\n\nn1|1.5|1.5|1|1|1|1|N|u\n\n\n\n", "bad n_mem"),
        ("g|u|preferred|\n\nn1|1|1|1|1|1|1|N|u\n\ni|1|1|1|running|Y|n1|n9|drbd|\n\n\n", "line 5"),
        ("g|u|preferred|\n\nn1|1|1|1|1|1|1|N|u\n\ni|1|1|1|dancing|Y|n1||plain|\n\n\n", "status"),
        ("g|u|preferred|\n\nn1|1|1|1|1|1|1|N|u\n\n\n\nx|1,2|\n", "line 7"),
    ],
)
def test_parse_names_the_bad_line(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse(text)


def _events(cluster_policy: ClusterPolicy) -> list[tuple[int, Event]]:
    def eid(n: int) -> EventId:
        return EventId(f"e{n:04d}")

    nodes = [
        NodeSpec(
            name=NodeName(f"n{i}"),
            address=f"10.0.0.{i}",
            memory_mib=mem,
            disk_mib=100_000,
            cpus=8,
            host_memory_mib=1024,
            tags=frozenset({f"rack:r{i % 2}"}),
            drained=i == 3,
        )
        for i, mem in enumerate([16384, 32768, 16384, 8192])
    ]
    insts = [
        ("web1", 4096, 10_000, "n0", "n1", PowerState.RUNNING, {"svc:web"}),
        ("web2", 2048, 20_000, "n0", "n2", PowerState.RUNNING, {"svc:web"}),
        ("db1", 8192, 30_000, "n1", "n0", PowerState.RUNNING, {"svc:db"}),
        ("idle", 1024, 5_000, "n2", "n3", PowerState.STOPPED, set()),
    ]
    events: list[Event] = [
        PolicySet(id=eid(0), time=0.0, actor="t", cluster_name="c", policy=cluster_policy)
    ]
    events += [
        NodeDeclared(id=eid(1 + i), time=0.0, actor="t", spec=s) for i, s in enumerate(nodes)
    ]
    for k, (name, mem, dsk, p, s, power, tags) in enumerate(insts):
        events.append(
            InstanceDeclared(
                id=eid(10 + k),
                time=0.0,
                actor="t",
                spec=InstanceSpec(
                    name=InstanceName(name),
                    memory_mib=mem,
                    vcpus=2,
                    disks=(DiskSpec(size_mib=dsk),),
                    tags=frozenset(tags),
                    power=power,
                ),
            )
        )
        events.append(
            InstancePlaced(
                id=eid(20 + k),
                time=0.0,
                actor="t",
                instance=InstanceName(name),
                primary=NodeName(p),
                secondary=NodeName(s),
                disks=(DiskPlacement(index=0, size_mib=dsk, minor=k, port=7000 + k),),
            )
        )
    return [(i + 1, e) for i, e in enumerate(events)]


def test_from_state_builds_what_htools_need(tmp_path: Path) -> None:
    policy = ClusterPolicy(exclusion_tag_prefixes=("svc:",), failure_domain_prefixes=("rack:",))
    state = fold_all(_events(policy))
    cluster = from_state(state=state)
    n = {node.name: node for node in cluster.nodes}
    # f_mem: total - host - running primaries; the stopped instance takes no memory.
    assert n["n0"].f_mem == 16384 - 1024 - 4096 - 2048
    assert n["n1"].f_mem == 32768 - 1024 - 8192
    assert n["n2"].f_mem == 16384 - 1024
    # f_dsk: every instance placed there, as primary or secondary.
    assert n["n0"].f_dsk == 100_000 - 10_000 - 20_000 - 30_000
    assert n["n3"].f_dsk == 100_000 - 5_000
    assert n["n3"].drained and not n["n3"].offline
    assert cluster.cluster_tags == ("htools:iextags:svc", "htools:nlocation:rack")
    inst = {i.name: i for i in cluster.instances}
    assert not inst["idle"].running and inst["web1"].running
    assert (inst["db1"].pnode, inst["db1"].snode) == ("n1", "n0")
    assert cluster.vcpu_ratio == policy.vcpu_ratio
    s = score(cluster)
    assert s.pri_tags_score == 1.0  # web1 and web2 share svc:web on n0
    assert s.offline_all_cnt == 1.0 and s.offline_pri_cnt == 0.0  # idle's secondary on n3
    if Path(f"{HTOOLS_BIN}/hinfo").exists():
        assert_parity(cluster=cluster, path=tmp_path / "state.data")
