"""One validation for every entry point (issue 28, item 5): names and tags are
full-string matches; a RAPI creation is held to the same rules as a desired-state
file (os, NICs, upper bounds on sizes); the codec checks names and specs again when it
decodes, so a value written to etcd by anything but corral never reaches a node; and
an event that does not decode stands in as `event.undecodable`, which the fold turns
into an alert while keeping the versions of the objects it names."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from events.codec import CorruptEvent, decode, encode
from events.ids import EventId, InstanceName, InvalidName, NodeName, check_name, check_tag
from events.model import InstanceDeclared, InstancePlaced, NodeDeclared
from events.projection import fold
from events.specs import DiskSpec, FenceSpec, InstanceSpec, NicSpec, NodeSpec
from events.state import ClusterState
from orchestrator.desired.file import DesiredFileError, parse_desired
from orchestrator.rapi.context import RapiError
from orchestrator.rapi.instance_create import parse_create

NEWLINE_NAMES = ("vm1\n", "vm1\r\n", "node-a\n")


@pytest.mark.parametrize("name", NEWLINE_NAMES)
def test_a_trailing_newline_is_not_part_of_a_name(name: str) -> None:
    with pytest.raises(InvalidName):
        check_name(name, what="instance name")


def test_a_trailing_newline_is_not_part_of_a_tag() -> None:
    with pytest.raises(InvalidName):
        check_tag("owner:alice\n")
    assert check_tag("owner:alice") == "owner:alice"


FILE = """cluster: {name: lab}
nodes:
  - name: node1
    address: 10.0.0.1
    memory: 24G
    disk: 730G
    cpus: 8
    fence: {agent: fence_ipmilan}
instances:
  - name: "vm1\\n"
    memory: 1G
    disks: [10G]
    tags: ["owner:alice\\n"]
"""


def test_the_desired_state_file_refuses_them_with_line_and_column() -> None:
    with pytest.raises(DesiredFileError) as info:
        parse_desired([("c.yaml", FILE)])
    where = {(p.line, p.column, p.field) for p in info.value.problems}
    assert (10, 11, "instances[0].name") in where
    assert (13, 12, "instances[0].tags[0]") in where


def _create(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "__version__": 1,
        "mode": "create",
        "name": "vm1",
        "disk_template": "drbd",
        "disks": [{"size": 1024}],
        "beparams": {"memory": 512, "vcpus": 1},
        "os": "debian",
    }
    body.update(overrides)
    return body


def test_a_good_rapi_creation_gives_the_spec() -> None:
    spec = parse_create(_create(nics=[{"mac": "AA:00:00:00:00:01", "ip": "10.0.0.5"}]))
    assert spec.nics == (NicSpec(mac="aa:00:00:00:00:01", ip="10.0.0.5"),)
    assert spec.disks == (DiskSpec(size_mib=1024),) and spec.memory_mib == 512


@pytest.mark.parametrize(
    ("overrides", "field", "says"),
    [
        ({"name": "vm1\n"}, "name", "must be lowercase"),
        ({"os": "debian; reboot"}, "os", "must be lowercase"),
        ({"os": "a b"}, "os", "must be lowercase"),
        ({"nics": [{"ip": {"x": 1}}]}, "nics[0].ip", "expected an IP address"),
        ({"nics": [{"ip": "300.1.1.1"}]}, "nics[0].ip", "not an IPv4"),
        ({"nics": [{"link": "br0; reboot"}]}, "nics[0].link", "nic link"),
        ({"nics": [{"link": "x" * 20}]}, "nics[0].link", "longer than 15"),
        ({"nics": [{"mode": "nat"}]}, "nics[0].mode", "not one of"),
        ({"nics": [{"mac": "01:00:00:00:00:01"}]}, "nics[0].mac", "multicast"),
        ({"nics": ["eth0"]}, "nics[0]", "expected an object"),
        ({"disks": [{"size": 2**50}]}, "disks[0].size", "impossibly large"),
        ({"disks": [{"size": "3000000T"}]}, "disks[0].size", "impossibly large"),
        ({"beparams": {"memory": 2**50}}, "beparams.memory", "impossibly large"),
        ({"beparams": {"memory": 512, "vcpus": 100_000}}, "beparams.vcpus", "out of range"),
        ({"beparams": {"memory": 512, "vcpus": True}}, "beparams.vcpus", "whole number"),
        ({"tags": ["owner:alice\n"]}, "tags[0]", "tag"),
        ({"pnode": "node1", "snode": "node1"}, "snode", "different node"),
    ],
)
def test_rapi_creation_is_held_to_the_desired_state_rules(
    overrides: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(RapiError) as info:
        parse_create(_create(**overrides))
    assert info.value.code == 400
    assert f"{field}: " in info.value.explain and says in info.value.explain, info.value.explain


def _spec(**kw: object) -> InstanceSpec:
    base: dict[str, object] = {
        "name": InstanceName("vm2"),
        "memory_mib": 512,
        "vcpus": 1,
        "disks": (DiskSpec(size_mib=1024),),
    }
    base.update(kw)
    return InstanceSpec(**base)  # type: ignore[arg-type]


def _declared(spec: InstanceSpec) -> bytes:
    return encode(InstanceDeclared(id=EventId("e1"), time=1.0, actor="x", spec=spec))


@pytest.mark.parametrize(
    "raw",
    [
        _declared(_spec(name=InstanceName("vm2\n"))),
        _declared(_spec(name=InstanceName("../etc"))),
        _declared(_spec(nics=(NicSpec(ip={"x": 1}),))),  # type: ignore[arg-type]
        _declared(_spec(nics=(NicSpec(link="br0 -x"),))),
        _declared(_spec(os="debian; reboot")),
        _declared(_spec(memory_mib=2**50)),
        encode(
            NodeDeclared(
                id=EventId("e2"),
                time=1.0,
                actor="x",
                spec=NodeSpec(
                    name=NodeName("node1"),
                    address="10.0.0.1; rm -rf /",
                    memory_mib=4096,
                    disk_mib=4096,
                    cpus=2,
                    fence=FenceSpec(agent="fence_ipmilan"),
                ),
            )
        ),
        encode(
            InstancePlaced(
                id=EventId("e3"),
                time=1.0,
                actor="x",
                instance=InstanceName("vm2"),
                primary=NodeName("node1\nhandlers { }"),
                secondary=NodeName("node2"),
                disks=(),
            )
        ),
    ],
)
def test_the_codec_checks_names_and_specs_when_it_decodes(raw: bytes) -> None:
    with pytest.raises(CorruptEvent):
        decode(raw)


def test_an_undecodable_event_is_an_alert_and_keeps_the_objects_versions() -> None:
    from events.codec import undecodable
    from events.model import EventUndecodable

    good = InstanceDeclared(id=EventId("e0"), time=1.0, actor="x", spec=_spec(name="vm1"))
    raw = _declared(_spec(nics=(NicSpec(ip={"x": 1}),)))  # type: ignore[arg-type]
    with pytest.raises(CorruptEvent) as info:
        decode(raw)
    stand_in = undecodable(raw, key="/corral/lab/events/e1", why=str(info.value))
    assert isinstance(stand_in, EventUndecodable)
    assert stand_in.keys == ("instance/vm2",) and stand_in.stored_type == "instance.declared"
    state = fold(ClusterState(), [(5, good), (6, stand_in)])
    assert "vm2" not in state.desired.instances  # its content is never applied
    assert state.versions["instance/vm2"] == 1  # as etcd's version key counts it
    alert = state.alerts["undecodable:/corral/lab/events/e1"]
    assert alert.severity == "critical" and alert.subject == "instance/vm2"
    assert "nics[0].ip" in alert.message and "revision 6" in alert.message
    # Garbage names nothing, and still says where it is.
    junk = undecodable(b"{not json", key="/corral/lab/events/x", why="not JSON")
    assert junk.keys == () and junk.stored_type == ""
    assert json.loads(json.dumps(junk.why))


def test_a_checkpoint_is_held_to_the_same_rules() -> None:
    from dataclasses import replace

    from events.lifecycle.checkpoints import decode_checkpoint, encode_checkpoint
    from events.specs import DesiredCluster

    good = ClusterState(
        desired=DesiredCluster(name="lab", instances={InstanceName("vm2"): _spec()})
    )
    assert decode_checkpoint(encode_checkpoint(good)) == good
    forged = replace(
        good,
        desired=DesiredCluster(name="lab", instances={InstanceName("vm2"): _spec(os="x; reboot")}),
    )
    with pytest.raises(CorruptEvent, match="os"):
        decode_checkpoint(encode_checkpoint(forged))


def test_a_checkpoint_is_checked_for_the_same_problems_in_the_same_order() -> None:
    """A checkpoint's state is held to the rules without checking again the types
    msgspec checked decoding it (`decoded_problems`, cheaper at thousands of
    instances): what it finds is exactly what `problems_of` finds."""
    import msgspec

    from events.specs import ClusterPolicy, DesiredCluster, HvParams
    from events.validation import decoded_problems, problems_of

    node = NodeSpec(
        name=NodeName("node1"),
        address="10.0.0.1",
        memory_mib=4096,
        host_memory_mib=4096,  # not less than the node's memory
        disk_mib=4096,
        cpus=2,
        fence=FenceSpec(agent="fence_ipmilan"),
    )
    forged = DesiredCluster(
        name="lab",
        policy=ClusterPolicy(suspect_timeout_s=60.0, lost_timeout_s=30.0),
        nodes={NodeName("node1"): node, NodeName("node 2"): replace(node, host_memory_mib=1)},
        instances={
            InstanceName("vm1"): _spec(name=InstanceName("vm1")),  # a clean one
            InstanceName("vm2"): _spec(os="x; reboot"),
            InstanceName("vm3"): _spec(name=InstanceName("vm3"), hv=HvParams(cpu_type="$(x)")),
            InstanceName("vm4"): _spec(name=InstanceName("vm4"), nics=(NicSpec(link="br0 -x"),)),
            InstanceName("vm5"): _spec(name=InstanceName("../etc"), tags=frozenset({"a b"})),
            InstanceName("vm6"): _spec(name=InstanceName("vm6"), hv=HvParams()),
        },
    )
    decoded = msgspec.json.decode(msgspec.json.encode(forged), type=DesiredCluster)
    found = decoded_problems(decoded)
    assert found == problems_of(decoded)
    assert {p.path for p in found} >= {
        "policy.lost_timeout_s",
        "nodes.node1.host_memory_mib",
        "nodes.node 2",
        "instances.vm2.os",
        "instances.vm3.hv.cpu_type",
        "instances.vm4.nics[0].link",
        "instances.vm5.name",
    }, found
    clean = replace(forged, policy=ClusterPolicy(), nodes={}, instances={})
    assert decoded_problems(clean) == problems_of(clean) == ()
