"""MACs for NICs that set none: generated once from the prefix, unique in the
cluster, the same for plan and apply, kept by a later apply of the same file, and
sent to the node helper as recorded (with the bridge and a VNC display)."""

from __future__ import annotations

from dataclasses import replace

from events.ids import InstanceName, NodeName
from events.specs import DesiredCluster, DiskSpec, InstanceSpec, NicSpec
from orchestrator.desired.macs import cluster_with_macs
from reactors.nodes.commands import step_requests
from reactors.plans.steps import DiskConfig, DrbdPeerConfig, Step, StepKind


def spec(name: str, *nics: NicSpec) -> InstanceSpec:
    return InstanceSpec(
        name=InstanceName(name),
        memory_mib=512,
        vcpus=1,
        disks=(DiskSpec(size_mib=1024),),
        nics=nics,
    )


def cluster(*specs: InstanceSpec) -> DesiredCluster:
    return DesiredCluster(name="c", instances={s.name: s for s in specs})


def test_generated_once_unique_and_kept() -> None:
    wanted = cluster(
        spec("web", NicSpec(), NicSpec(link="br1")),
        spec("db", NicSpec(mac="aa:00:00:00:00:01")),
    )
    first = cluster_with_macs(wanted=wanted, live=DesiredCluster(name="c"))
    again = cluster_with_macs(wanted=wanted, live=DesiredCluster(name="c"))
    assert first == again  # plan and apply agree
    macs = [n.mac for s in first.instances.values() for n in s.nics]
    assert all(m and m.startswith("aa:00:00:") for m in macs) and len(set(macs)) == 3
    # A later apply of the same file (no macs in it) keeps the recorded ones.
    kept = cluster_with_macs(wanted=wanted, live=first)
    assert kept.instances == first.instances
    # A new NIC gets a new MAC; the old ones stay.
    grown = replace(
        wanted,
        instances={
            **wanted.instances,
            InstanceName("web"): spec("web", NicSpec(), NicSpec(), NicSpec()),
        },
    )
    after = cluster_with_macs(wanted=grown, live=first).instances[InstanceName("web")]
    assert [n.mac for n in after.nics[:2]] == [
        n.mac for n in first.instances[InstanceName("web")].nics
    ]
    assert after.nics[2].mac not in macs


def test_start_request_carries_recorded_nics_and_vnc() -> None:
    s = spec("web", NicSpec(mac="aa:00:00:00:00:07", link="br1"))
    disk = DiskConfig(
        resource="web-d0",
        index=0,
        size_mib=1024,
        minor=5,
        port=11005,
        volume_group="corral",
        hosts=(DrbdPeerConfig(node=NodeName("a"), address="10.0.0.1", node_id=0),),
    )
    (req,) = step_requests(
        Step(kind=StepKind.START_VM, node=NodeName("a"), instance=s.name, spec=s, disks=(disk,))
    )
    assert req.body is not None
    assert req.body["nics"] == [
        {
            "index": 0,
            "mac": "aa:00:00:00:00:07",
            "link": "br1",
            "mode": "bridged",
            "model": "virtio-net-pci",
        }
    ]
    assert req.body["vnc"] == {"display": 5}


def test_a_migration_or_failover_target_without_the_bridge_is_refused_naming_both() -> None:
    from events.model import NodeFacts
    from events.specs import NodeSpec
    from events.state import ClusterState, NodeObservation
    from reactors.placement.allocator import run_refusal

    web = spec("web", NicSpec(mac="aa:00:00:00:00:07", link="br-app"))
    node = NodeSpec(name=NodeName("b"), address="10.0.0.2", memory_mib=8192, disk_mib=10240, cpus=4)

    def state(bridges: tuple[str, ...] | None) -> ClusterState:
        facts = NodeFacts(
            hostname="b",
            cpus=4,
            memory_total_mib=8192,
            memory_free_mib=8000,
            boot_id="x",
            bridges=bridges,
        )
        return ClusterState(
            desired=DesiredCluster(name="c", nodes={node.name: node}, instances={web.name: web}),
            observed={node.name: NodeObservation(facts=facts)},
        )

    why = run_refusal(state=state(("br0",)), instance=web.name, node=node.name)
    assert why is not None and "node b has no bridge 'br-app'" in why and "nics[0].link" in why
    assert run_refusal(state=state(("br0", "br-app")), instance=web.name, node=node.name) is None
    assert run_refusal(state=state(None), instance=web.name, node=node.name) is None


def test_placement_never_chooses_a_node_without_the_instances_bridges() -> None:
    """The allocator (and the placer's array model, which leaves such an instance
    to it) picks only nodes whose probe lists every bridge of the instance's NICs;
    when none can, the refusal names the node and the bridge."""
    from events.model import NodeFacts
    from events.specs import NodeSpec
    from events.state import ClusterState, NodeObservation
    from reactors.placement.allocator import choose_pair
    from reactors.placement.pending import PendingModel

    bridges = {"a": ("br0", "br-app"), "b": ("br0",), "c": ("br0", "br-app"), "d": ("br0",)}
    nodes = {
        NodeName(n): NodeSpec(
            name=NodeName(n), address=f"10.0.0.{i}", memory_mib=8192, disk_mib=20480, cpus=4
        )
        for i, n in enumerate(bridges, 1)
    }

    def facts(n: str) -> NodeFacts:
        return NodeFacts(
            hostname=n,
            cpus=4,
            memory_total_mib=8192,
            memory_free_mib=8000,
            boot_id=n,
            bridges=bridges[n],
        )

    web = spec("web", NicSpec(mac="aa:00:00:00:00:07", link="br-app"))
    state = ClusterState(
        desired=DesiredCluster(name="c", nodes=nodes, instances={web.name: web}),
        observed={NodeName(n): NodeObservation(facts=facts(n)) for n in bridges},
    )
    choice = choose_pair(state=state, spec=web)
    assert {choice.primary, choice.secondary} == {"a", "c"}, choice
    assert PendingModel(state).choose(web) is None  # left to choose_pair
    plain = spec("plain", NicSpec(mac="aa:00:00:00:00:08", link="br0"))
    assert PendingModel(state).choose(plain) is not None

    pinned = replace(web, primary=NodeName("b"))
    refused = choose_pair(state=state, spec=pinned).refusal
    assert refused is not None and "FailBridge: 2" in refused, refused
    assert "node b has no bridge 'br-app' for web's nics[0].link (it has: br0)" in refused
    assert "node d has no bridge 'br-app'" in refused


def _file(prefix_line: str, macs: str = "") -> str:
    return f"""cluster:
  name: c
  policy:
    n_plus_one: false
{prefix_line}nodes:
  - name: node1
    address: 10.0.0.1
    memory: 8G
    disk: 100G
    cpus: 4
    fence: {{agent: fence_ipmilan}}
instances:
  - name: web
    memory: 1G
    disks: [10G]
    nics: [{{link: br0{macs}}}, {{link: br1}}]
"""


def test_the_cluster_mac_prefix_names_new_macs_and_never_changes_recorded_ones() -> None:
    from orchestrator.desired.file import parse_desired

    default = parse_desired([("f.yaml", _file(""))])
    assert default.cluster.policy.mac_prefix == "aa:00:00" and not default.warnings
    first = cluster_with_macs(wanted=default.cluster, live=DesiredCluster(name="c"))
    old_macs = [n.mac for n in first.instances[InstanceName("web")].nics]
    assert all(m and m.startswith("aa:00:00:") for m in old_macs), old_macs

    moved = parse_desired([("f.yaml", _file('    mac_prefix: "0A:1B:2C"\n'))])
    assert moved.cluster.policy.mac_prefix == "0a:1b:2c" and not moved.warnings
    fresh = cluster_with_macs(wanted=moved.cluster, live=DesiredCluster(name="c"))
    assert all(
        n.mac and n.mac.startswith("0a:1b:2c:") for n in fresh.instances[InstanceName("web")].nics
    )
    # Applied over the live cluster whose NICs have their MACs: they keep them; a
    # NIC added later gets the new prefix.
    kept = cluster_with_macs(wanted=moved.cluster, live=first)
    assert [n.mac for n in kept.instances[InstanceName("web")].nics] == old_macs
    web = moved.cluster.instances[InstanceName("web")]
    grown = replace(
        moved.cluster,
        instances={web.name: replace(web, nics=(*web.nics, NicSpec(link="br2")))},
    )
    after = cluster_with_macs(wanted=grown, live=first).instances[web.name].nics
    assert [n.mac for n in after[:2]] == old_macs
    assert after[2].mac is not None and after[2].mac.startswith("0a:1b:2c:")


def test_a_bad_mac_prefix_is_refused_at_its_line_and_a_global_one_warned() -> None:
    import pytest

    from orchestrator.desired.file import DesiredFileError, parse_desired

    for value, says in (
        ('"aa:00"', "is not a MAC prefix; expected three hex pairs"),
        ('"aa:00:00:01"', "is not a MAC prefix"),
        ('"ab:00:00"', "multicast prefix"),
        ("12", "is not a MAC prefix"),
    ):
        with pytest.raises(DesiredFileError) as info:
            parse_desired([("f.yaml", _file(f"    mac_prefix: {value}\n"))])
        (problem,) = info.value.problems
        assert (problem.line, problem.field) == (5, "cluster.policy.mac_prefix"), problem
        assert says in problem.message, problem
    globally = parse_desired([("f.yaml", _file('    mac_prefix: "00:16:3e"\n'))])
    assert globally.cluster.policy.mac_prefix == "00:16:3e"
    (warning,) = globally.warnings
    assert str(warning).startswith("f.yaml:5:17: cluster.policy.mac_prefix: mac_prefix 00:16:3e")
    assert "not locally administered" in warning.message
