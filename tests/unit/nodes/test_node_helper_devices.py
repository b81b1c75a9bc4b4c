"""The node helper's guest devices on a simulated host (the same code a real node
runs): NICs become qemu-made taps the helper puts on the named bridge, the seed
drive is the helper's own path and read-only, VNC listens on loopback only,
hypervisor parameters map to qemu's options; every bad field is refused with
exit 64 naming it and leaves the host as it was, and a NIC on a bridge the node
lacks is refused before qemu runs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from events.fields.hv import NIC_TYPES as FIELD_NIC_TYPES
from events.ids import InstanceName
from events.specs import HV_FIELDS, DiskSpec, HvParams, InstanceSpec, NicSpec
from nodehelper.devices import HV_KEYS, NIC_TYPES, tap_name
from reactors.nodes.commands import NIC_MODELS, nic_hotplug, nic_requests
from tests.unit.nodes.test_node_helper import VM, Node, helper, node, prepared

__all__ = ["node"]  # the fixture, shared with the verbs' tests

NIC = {"index": 0, "mac": "aa:00:00:12:34:56", "link": "br0"}


def argv_of(node: Node) -> list[str]:
    return node.host.vms["web"].argv


def test_nics_vnc_seed_and_hv_reach_qemu_and_the_bridge(node: Node) -> None:
    prepared(node)
    node.host.files["/var/lib/corral/seed/web.img"] = b"\0" * 512
    node.host.bridges.add("br-app")
    body = {
        **VM,
        "nics": [NIC, {"index": 1, "mac": "aa:00:00:12:34:58", "link": "br-app", "model": "e1000"}],
        "vnc": {"display": 3},
        "seed": True,
        "hv": {
            "kvm_flag": "disabled",
            "cpu_type": "qemu64",
            "disk_cache": "writeback",
            "usb_mouse": "tablet",
            "reboot_behavior": "exit",
            "kernel_path": "/boot/vmlinuz",
            "kernel_args": "console=ttyS0 ip=10.0.0.5::10.0.0.1:255.255.255.0",
        },
    }
    rc, _, err = helper(node, "vm-start", "--term", "5", body=body)
    assert rc == 0, err
    argv = " ".join(argv_of(node))
    tap0, tap1 = tap_name("web", 0), tap_name("web", 1)
    assert len(tap0) <= 15 and tap0 != tap1
    assert f"-netdev tap,id=net-n0,ifname={tap0},script=no,downscript=no" in argv
    assert "virtio-net-pci,netdev=net-n0,id=nic-n0,mac=aa:00:00:12:34:56,addr=0x15" in argv
    assert "e1000,netdev=net-n1,id=nic-n1,mac=aa:00:00:12:34:58,addr=0x16" in argv
    assert node.host.vms["web"].taps == {tap0: "br0", tap1: "br-app"}
    assert "-vnc 127.0.0.1:3 " in argv
    assert "file=/var/lib/corral/seed/web.img,format=raw,if=none,id=drive-seed,readonly=on" in argv
    assert "-machine pc,accel=tcg -cpu qemu64" in argv
    assert "cache.direct=off" in argv and "-no-reboot" in argv and "usb-tablet" in argv
    assert "-kernel /boot/vmlinuz -append console=ttyS0 ip=10.0.0.5::10.0.0.1:255.255.255.0" in argv


def test_nic_type_is_the_model_of_a_nic_that_names_none(node: Node) -> None:
    """Ganeti's kvm `nic_type` in `hv`: e1000 for the NIC without a model, the
    other NIC's own model kept; `paravirtual` (the default) is virtio-net."""
    prepared(node)
    nics = [NIC, {"index": 1, "mac": "aa:00:00:12:34:58", "link": "br0", "model": "rtl8139"}]
    body = {**VM, "nics": nics, "hv": {"nic_type": "e1000"}}
    rc, _, err = helper(node, "vm-start", "--term", "5", body=body)
    assert rc == 0, err
    argv = " ".join(argv_of(node))
    assert "-device e1000,netdev=net-n0,id=nic-n0,mac=aa:00:00:12:34:56,addr=0x15" in argv
    assert "-device rtl8139,netdev=net-n1,id=nic-n1" in argv


def snapshot(node: Node) -> Any:
    h = node.host
    return copy.deepcopy((h.files, h.volumes, h.copies, h.vms))


BAD: list[tuple[dict[str, Any], str]] = [
    ({"nics": [{**NIC, "mac": "01:00:00:00:00:01"}]}, "nics[0].mac"),
    ({"nics": [{**NIC, "mac": "AA:00:00:00:00:01"}]}, "nics[0].mac"),
    ({"nics": [{**NIC, "link": "br0 master eth0"}]}, "nics[0].link"),
    ({"nics": [{**NIC, "link": "-br0"}]}, "nics[0].link"),
    ({"nics": [{**NIC, "link": "br9"}]}, "no bridge 'br9'"),
    ({"nics": [{**NIC, "model": "virtio-net-pci,romfile=/etc/shadow"}]}, "nics[0].model"),
    ({"nics": [{**NIC, "mode": "routed"}]}, "nics[0].mode"),
    ({"nics": [{**NIC, "ifname": "eth0"}]}, "unknown field 'ifname'"),
    ({"nics": [NIC, {**NIC, "index": 1}]}, "nics[1].mac"),
    ({"nics": [NIC, {**NIC, "mac": "aa:00:00:00:00:02"}]}, "nics[1].index"),
    ({"vnc": {"display": 3, "address": "0.0.0.0"}}, "unknown field 'address'"),
    ({"vnc": {"display": 70000}}, "vnc.display"),
    ({"seed": "/etc/shadow"}, "seed"),
    ({"seed": True}, "seed: /var/lib/corral/seed/web.img does not exist"),
    ({"hv": {"kernel_path": "/etc/shadow"}}, "hv.kernel_path"),
    ({"hv": {"kernel_path": "/boot/../etc/shadow"}}, "hv.kernel_path"),
    ({"hv": {"initrd_path": "/boot/initrd.img"}}, "need kernel_path"),
    ({"hv": {"kernel_path": "/boot/vmlinuz", "kernel_args": "a\nb"}}, "hv.kernel_args"),
    ({"hv": {"cpu_type": "host -drive file=/etc/shadow"}}, "hv.cpu_type"),
    ({"hv": {"machine_type": "pc,accel=kvm"}}, "hv.machine_type"),
    ({"hv": {"disk_cache": "writeback", "disk_aio": "native"}}, "disk_aio native"),
    ({"hv": {"boot_order": "floppy"}}, "hv.boot_order"),
    ({"hv": {"nic_type": "virtio-net-pci,romfile=/etc/shadow"}}, "hv.nic_type"),
    ({"hv": {"nic_type": "virtio"}}, "hv.nic_type"),
    ({"hv": {"serial": "tcp:0:23"}}, "unknown field 'serial'"),
]


@pytest.mark.parametrize(("extra", "says"), BAD)
def test_bad_device_fields_are_refused_and_change_nothing(
    node: Node, extra: dict[str, Any], says: str
) -> None:
    prepared(node)
    before = snapshot(node)
    rc, out, err = helper(node, "vm-start", "--term", "5", body={**VM, **extra})
    assert rc == 64, (rc, out, err)
    assert says in err and err.count("\n") == 1, err
    assert snapshot(node) == before


def test_hotplug_adds_and_removes_a_nic_and_a_disk_in_their_cold_start_slots(node: Node) -> None:
    prepared(node)
    assert helper(node, "vm-start", "--term", "5", body={**VM, "nics": [NIC]})[0] == 0
    vm = node.host.vms["web"]
    nic1 = {"index": 1, "mac": "aa:00:00:12:34:58", "link": "br0"}
    rc, out, err = helper(
        node, "vm-hotplug", "--term", "5", body={"name": "web", "action": "add", "nic": nic1}
    )
    assert rc == 0, err
    assert vm.devices["nic-n1"] == "0x16" and vm.taps[tap_name("web", 1)] == "br0", out
    # The same NIC again (a retry whose first answer was lost): it is there, so the
    # verb succeeds, and nothing changes (nothing of it is taken out either).
    before = snapshot(node)
    rc, out, err = helper(
        node, "vm-hotplug", "--term", "5", body={"name": "web", "action": "add", "nic": nic1}
    )
    assert rc == 0 and "nic 1 was already in web" in out, (out, err)
    assert snapshot(node) == before
    # A disk whose DRBD device is not there: refused by qemu, nothing half-done.
    disk = {"name": "web", "action": "add", "disk": {"index": 1, "minor": 9}}
    rc, _, err = helper(node, "vm-hotplug", "--term", "5", body=disk)
    assert rc == 1 and "blockdev-add" in err and "/dev/drbd9" in err, err
    assert snapshot(node) == before
    # A slot in use (disk index clashing with an existing device id) is refused by
    # device_add, and the block node it had added is deleted again.
    taken = {"name": "web", "action": "add", "disk": {"index": 0, "minor": 3}}
    rc, _, err = helper(node, "vm-hotplug", "--term", "5", body=taken)
    assert rc == 1 and "device_add" in err and "disk-d0" in err, err
    assert snapshot(node) == before
    # A disk plugged, then the same add retried: already there, still plugged.
    plug = {"name": "web", "action": "add", "disk": {"index": 1, "minor": 3}}
    rc, out, err = helper(node, "vm-hotplug", "--term", "5", body=plug)
    assert rc == 0 and vm.block_nodes["drive-d1"] == "/dev/drbd3", (out, err)
    before = snapshot(node)
    rc, out, err = helper(node, "vm-hotplug", "--term", "5", body=plug)
    assert rc == 0 and "disk 1 was already in web" in out, (out, err)
    assert snapshot(node) == before
    rc, _, err = helper(
        node, "vm-hotplug", "--term", "5", body={"name": "web", "action": "remove", "nic": nic1}
    )
    assert rc == 0 and "nic-n1" not in vm.devices and tap_name("web", 1) not in vm.taps, err


def test_hotplug_refusals_name_the_field_or_the_state(node: Node) -> None:
    prepared(node)
    body = {"name": "web", "action": "add", "nic": NIC}
    rc, _, err = helper(node, "vm-hotplug", "--term", "5", body=body)
    assert rc == 64 and "web is not running here" in err, err
    assert helper(node, "vm-start", "--term", "5", body=VM)[0] == 0
    before = snapshot(node)
    for bad, says in [
        ({**body, "nic": {**NIC, "link": "br7"}}, "no bridge 'br7'"),
        ({**body, "action": "replace"}, "action 'replace'"),
        ({"name": "web", "action": "add"}, "exactly one of nic, disk"),
        ({**body, "disk": {"index": 1, "minor": 4}}, "exactly one of nic, disk"),
        ({**body, "nic": {**NIC, "script": "/tmp/x"}}, "unknown field 'script'"),
    ]:
        rc, _, err = helper(node, "vm-hotplug", "--term", "5", body=bad)
        assert rc == 64 and says in err, (bad, err)
        assert snapshot(node) == before


def test_the_helper_takes_exactly_the_models_hypervisor_parameters() -> None:
    """The helper imports nothing of corral's, so it keeps its own list of the `hv`
    keys `vm-start` takes (`nodehelper.devices.HV_KEYS`): the model's, no more."""
    assert frozenset(HV_FIELDS) == HV_KEYS


@pytest.mark.parametrize(
    ("nic_type", "model"),
    [("", "virtio-net-pci"), ("paravirtual", "virtio-net-pci"), ("e1000", "e1000")],
)
def test_corral_sends_each_nic_as_the_filled_nic_type(nic_type: str, model: str) -> None:
    """The vm-start and hotplug NICs corral builds carry the qemu device of the
    instance's filled `nic_type`, the same the helper would choose."""
    spec = InstanceSpec(
        name=InstanceName("web"),
        memory_mib=256,
        vcpus=1,
        disks=(DiskSpec(size_mib=1024),),
        nics=(NicSpec(mac="aa:00:00:12:34:56", link="br0"),),
        hv=HvParams(nic_type=nic_type),
    )
    assert [n["model"] for n in nic_requests(spec)] == [model]
    plug = nic_hotplug(spec, 0).body
    assert plug is not None and plug["nic"]["model"] == model
    assert NIC_TYPES[nic_type or "paravirtual"] == model


def test_corral_and_the_helper_map_every_nic_type_to_the_same_model() -> None:
    """The two tables are kept apart (the helper imports nothing from corral):
    every `nic_type` the desired state accepts names one qemu device in both."""
    assert set(NIC_MODELS) == {"", *FIELD_NIC_TYPES}
    assert {t: NIC_MODELS[t] for t in FIELD_NIC_TYPES} == NIC_TYPES
