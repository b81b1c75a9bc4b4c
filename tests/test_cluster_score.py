"""Our hbal cluster score against the real Ganeti htools (3.0.2): seeded random
clusters of 4-20 heterogeneous nodes and 10-200 instances (exclusion tags, failure
domains, drained/offline nodes, stopped and offline instances, tight memory so N+1
fails) are rendered to htools' text format, `hinfo -t FILE -v -v -v` prints every
score component, and each must match ours within 1e-6; `hbal` must see the same
N+1-failing nodes. Also: render/parse round trips and `from_state` on a folded
event log."""

from __future__ import annotations

import random
import re
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
from reactors.balance_model import (
    EXCLUSION_TAG_PREFIX,
    LOCATION_TAG_PREFIX,
    BCluster,
    BGroup,
    BInstance,
    BNode,
    BPolicy,
    from_state,
    group_uuid,
)
from reactors.cluster_score import WEIGHTS, n1_failures, score
from reactors.htools_text import parse, render
from tests.conftest import require_tool

HTOOLS_BIN = "/usr/lib/ganeti/3.0/usr/bin"
PACKAGE = "ganeti-htools-3.0"
TOLERANCE = 1e-6

# --------------------------------------------------------------------------- generator


def random_cluster(*, seed: int) -> BCluster:
    rng = random.Random(seed)
    n_nodes = rng.randint(4, 20)
    n_instances = rng.randint(10, 200)
    with_locations = rng.random() < 0.5
    nodes: list[BNode] = []
    for i in range(n_nodes):
        nodes.append(
            BNode(
                name=f"node{i:02d}.example.com",
                t_mem=rng.choice([16384, 32768, 65536, 131072]),
                n_mem=rng.choice([1024, 2048, 4096]),
                f_mem=0,  # filled in below
                t_dsk=rng.choice([200_000, 500_000, 1_000_000, 2_000_000]),
                f_dsk=0,
                t_cpu=rng.choice([8, 16, 32, 64]),
                group="default",
                tags=(f"rack:r{rng.randint(1, 3)}",) if with_locations else (),
                spindles=rng.choice([1, 1, 2, 4]),
                os_cpus=rng.choice([1, 1, 2]),
                cpu_speed=rng.choice([1.0, 1.0, 1.5]),
            )
        )
    # One node drained in some clusters, one offline in others.
    if rng.random() < 0.5:
        k = rng.randrange(n_nodes)
        nodes[k] = replace(nodes[k], drained=True)
    if rng.random() < 0.25:
        k = rng.randrange(n_nodes)
        nodes[k] = replace(nodes[k], offline=True)
    names = [n.name for n in nodes]
    # Half the clusters are placed with care (primaries only where memory is left,
    # on usable nodes), the other half anywhere: both low and high scores get checked.
    careful = seed % 2 == 0
    room = {n.name: n.t_mem - n.n_mem for n in nodes}
    usable = [n.name for n in nodes if not (n.offline or n.drained)]
    instances: list[BInstance] = []
    for j in range(n_instances):
        mem = rng.choice([512, 1024, 2048, 4096, 8192])
        fitting = [n for n in usable if room[n] >= mem]
        if careful and len(fitting) >= 2:
            pnode = rng.choice(fitting)
            snode = rng.choice([n for n in usable if n != pnode])
        else:
            pnode, snode = rng.sample(names, 2)
        tags: list[str] = []
        if rng.random() < 0.5:
            tags.append(f"svc:{rng.choice(['web', 'db', 'cache', 'mail'])}")
        if rng.random() < 0.2:
            tags.append(f"owner:{rng.choice(['ops', 'dev'])}")
        offline = rng.random() < 0.04
        running = not offline and rng.random() < 0.85
        if running:
            room[pnode] -= mem
        instances.append(
            BInstance(
                name=f"inst{j:03d}.example.com",
                mem=mem,
                dsk=rng.choice([5120, 10240, 20480, 51200]),
                vcpus=rng.randint(1, 8),
                running=running,
                offline=offline,
                auto_balance=rng.random() < 0.9,
                pnode=pnode,
                snode=snode,
                tags=tuple(tags),
                spindle_use=rng.choice([1, 1, 2]),
            )
        )
    mem_used = {n: 0 for n in names}
    dsk_used = {n: 0 for n in names}
    for inst in instances:
        if inst.running:
            mem_used[inst.pnode] += inst.mem
        dsk_used[inst.pnode] += inst.dsk
        if inst.snode is not None:
            dsk_used[inst.snode] += inst.dsk
    nodes = [
        replace(
            n,
            f_mem=n.t_mem - n.n_mem - mem_used[n.name],
            f_dsk=n.t_dsk - dsk_used[n.name],
        )
        for n in nodes
    ]
    policy = BPolicy(vcpu_ratio=rng.choice([4.0, 8.0]), spindle_ratio=rng.choice([16.0, 32.0]))
    ctags = [EXCLUSION_TAG_PREFIX + "svc"]
    if with_locations:
        ctags.append(LOCATION_TAG_PREFIX + "rack")
    return BCluster(
        nodes=tuple(nodes),
        instances=tuple(instances),
        groups=(
            BGroup(
                name="default",
                uuid=group_uuid(name="default"),
                policy=policy if rng.random() < 0.7 else None,
            ),
        ),
        cluster_tags=tuple(ctags),
        policy=policy,
    )


# --------------------------------------------------------------------------- htools


_ROW = re.compile(r"^\s+([a-z0-9_]+)\s+(-?[0-9.]+|NaN|-?Infinity)\s+x([0-9.]+)\s*$")


def hinfo_components(*, path: Path) -> tuple[dict[str, tuple[float, float]], float]:
    hinfo = require_tool(f"{HTOOLS_BIN}/hinfo", PACKAGE)
    out = subprocess.run(
        [hinfo, "-t", str(path), "-v", "-v", "-v"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    section = out.split("Cluster coefficients:", 1)[1]
    rows: dict[str, tuple[float, float]] = {}
    for line in section.splitlines():
        m = _ROW.match(line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    total = re.search(r"^Cluster score: (\S+)$", out, re.MULTILINE)
    assert total is not None, out
    return rows, float(total.group(1))


def hbal_initial(*, path: Path) -> tuple[float, int]:
    """hbal's initial score and its count of bad (N+1-failing) nodes."""
    hbal = require_tool(f"{HTOOLS_BIN}/hbal", PACKAGE)
    out = subprocess.run(
        [hbal, "-t", str(path), "-v", "-l", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    initial = re.search(r"Initial score: (\S+)", out)
    bad = re.search(r"Initial check done: (\d+) bad nodes", out)
    assert initial is not None and bad is not None, out
    return float(initial.group(1)), int(bad.group(1))


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
        ("g|u|preferred|\n\nn1|1|1|1|1|1|1|Q|u\n\n\n\n", "role"),
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
