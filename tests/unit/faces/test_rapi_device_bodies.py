"""The `nics`/`disks` lists of a RAPI modify body, in each form Ganeti's
OP_INSTANCE_SET_PARAMS takes (`[op, params]`, `[index, params]`, `[op, index,
params]`), read into what corral does, and every malformed or unknown entry
refused with the status Ganeti's client gets and a message naming the entry or
key; then the NIC edits applied to a spec in order, the MACs of the NICs that
stay kept, a bad index or value refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from events.ids import InstanceName
from events.specs import DiskSpec, InstanceSpec, NicSpec
from orchestrator.device_changes import NicEdit, nics_edited, with_checked_macs
from orchestrator.operations import OperationRefused
from orchestrator.rapi.context import RapiError
from orchestrator.rapi.device_bodies import parse_devices

M0, M1, M2 = "aa:00:00:00:03:00", "aa:00:00:00:03:01", "aa:00:00:00:03:02"
WEB1 = InstanceSpec(
    name=InstanceName("web1"),
    memory_mib=256,
    vcpus=1,
    disks=(DiskSpec(size_mib=1024), DiskSpec(size_mib=512)),
    nics=(NicSpec(mac=M0), NicSpec(mac=M1, link="br1"), NicSpec(mac=M2)),
)


def test_each_ganeti_form_is_read() -> None:
    legacy = parse_devices({"nics": [["remove", {}]], "disks": []})
    assert legacy.nic_edits == (NicEdit(op="remove", index=-1),)
    indexed = parse_devices({"nics": [["remove", 1, {}], ["modify", "0", {"link": "br1"}]]})
    assert indexed.nic_edits == (
        NicEdit(op="remove", index=1),
        NicEdit(op="modify", index=0, params={"link": "br1"}),
    )
    old_modify = parse_devices({"nics": [[2, {"mac": "generate", "ip": "none"}]]})
    assert old_modify.nic_edits == (
        NicEdit(op="modify", index=2, params={"mac": None, "ip": None}),
    )
    disk = parse_devices({"disks": [["remove", -1, {}]]})
    assert disk.disk_removes == (-1,) and not disk.additions
    added = parse_devices({"disks": [["add", {"size": 256}]], "nics": [["add", -1, {}]]})
    assert added.disk_adds == ({"size": 256},) and added.nic_adds == ({},)
    assert not added.removals


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"nics": {"remove": 0}}, 400, "nics must be a list"),
        ({"nics": ["remove"]}, 400, "nics[0] must be [operation"),
        ({"nics": [["remove", 0, {}, {}]]}, 400, "nics[0] must be [operation"),
        ({"nics": [["drop", 0, {}]]}, 400, "nics[0]: operation 'drop'"),
        ({"nics": [["modify", {}]]}, 400, "nics[0]: modify needs an index"),
        ({"nics": [["remove", True, {}]]}, 400, "nics[0]: the index"),
        ({"nics": [["remove", "eth0", {}]]}, 400, "not by name or UUID"),
        ({"nics": [["modify", 0, "br0"]]}, 400, "nics[0]: parameters must be an object"),
        ({"nics": [["remove", 1, {"link": "br0"}]]}, 400, "nics[0]: a removal takes no"),
        ({"nics": [["modify", 0, {"bridge": "br0"}]]}, 400, "nics[0].bridge: unknown NIC"),
        ({"nics": [[0, {"vlan": "5"}]]}, 501, "nics[0].vlan"),
        ({"nics": [["modify", 0, {"network": "n1"}]]}, 501, "nics[0].network"),
        ({"disks": [["modify", 0, {"mode": "ro"}]]}, 501, "disks[0]: changing a disk"),
        ({"disks": [["add", 0, {"size": 1}]]}, 501, "disks[0]: corral adds disks at the end"),
        ({"disks": [["remove", {}], ["remove", {}]]}, 400, "one disk is removed at a time"),
        (
            {"disks": [["remove", {}]], "nics": [["remove", {}]]},
            400,
            "disk removal and the NIC changes separately",
        ),
        (
            {"disks": [["add", {"size": 1}]], "nics": [["remove", {}]]},
            400,
            "additions and removals",
        ),
    ],
)
def test_malformed_entries_are_refused_naming_them(
    body: dict[str, Any], code: int, words: str
) -> None:
    with pytest.raises(RapiError) as got:
        parse_devices(body)
    assert got.value.code == code
    assert words in str(got.value)


def test_edits_apply_in_order_and_keep_the_macs_that_stay() -> None:
    # Ganeti applies the operations in order: after removing nics[0], nics[0] is
    # the former nics[1].
    edits = parse_devices({"nics": [["remove", 0, {}], ["modify", 0, {"link": "br0"}]]})
    new = nics_edited(WEB1, edits.nic_edits)
    assert [(n.mac, n.link) for n in new.nics] == [(M1, "br0"), (M2, "br0")]
    assert new.disks == WEB1.disks and new.memory_mib == WEB1.memory_mib
    last = nics_edited(WEB1, parse_devices({"nics": [["remove", {}]]}).nic_edits)
    assert [n.mac for n in last.nics] == [M0, M1]


def test_a_nic_given_no_mac_gets_a_new_unique_one() -> None:
    edits = parse_devices({"nics": [["modify", 1, {"mac": "generate"}]]}).nic_edits
    new = with_checked_macs(
        nics_edited(WEB1, edits), taken={"aa:00:00:00:09:09"}, prefix="aa:00:00"
    )
    macs = [n.mac for n in new.nics]
    assert macs[0] == M0 and macs[2] == M2
    assert macs[1] is not None and macs[1] not in (M0, M1, M2, "aa:00:00:00:09:09")
    with pytest.raises(OperationRefused) as taken:
        with_checked_macs(WEB1, taken={M2}, prefix="aa:00:00")
    assert taken.value.field == "nics[2].mac"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"nics": [["remove", 3, {}]]}, "nics[3]"),
        ({"nics": [["modify", -2, {"link": "br0"}]]}, "nics[-2]"),
        ({"nics": [["modify", 1, {"link": "br 1"}]]}, "nics[1].link"),
        ({"nics": [["modify", 2, {"mode": "nat"}]]}, "nics[2].mode"),
        ({"nics": [["modify", 0, {"mac": "zz"}]]}, "nics[0].mac"),
        ({"nics": [["remove", 0, {}], ["modify", 1, {"ip": "300.1.1.1"}]]}, "nics[2].ip"),
        ({"nics": [["remove", {}], ["remove", {}], ["remove", {}], ["remove", {}]]}, "nics[-1]"),
    ],
)
def test_a_bad_index_or_value_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    edits = parse_devices(body).nic_edits
    with pytest.raises(OperationRefused) as got:
        nics_edited(WEB1, edits)
    assert got.value.field == field
    assert field in str(got.value)
