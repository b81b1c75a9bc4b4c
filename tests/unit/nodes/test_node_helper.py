"""The node helper's verbs on a simulated host (the same code a real node runs):
every refusal is one clear line with exit 64 (75 for a stale term) and leaves the
host exactly as it was; accepted verbs change what they say; a batch is validated
whole before anything runs and stops a group at its first failure."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import pytest

from nodehelper.drbd import resource_request, resource_text
from nodehelper.main import run
from reactors.nodes.probe import parse_probe
from simulators.fabric import Fabric, Host
from simulators.node_helper import SimNodeEnv
from simulators.shell import run_tool

RES: dict[str, Any] = {
    "resource": "web-d0",
    "minor": 3,
    "port": 11003,
    "volume_group": "corral",
    "allow_two_primaries": False,
    "hosts": [
        {"node": "node1", "node_id": 0, "address": "10.0.0.1"},
        {"node": "node2", "node_id": 1, "address": "10.0.0.2"},
    ],
}
VM: dict[str, Any] = {
    "name": "web",
    "memory_mib": 512,
    "vcpus": 1,
    "disks": [{"index": 0, "minor": 3}],
}


@dataclass
class Node:
    fabric: Fabric
    host: Host


@pytest.fixture
def node() -> Node:
    fabric = Fabric()
    for name in ("node1", "node2"):
        fabric.add_host(
            Host(name=name, cpus=4, memory_mib=8192, vg_name="corral", vg_size_mib=8192)
        )
    return Node(fabric=fabric, host=fabric.hosts["node1"])


def helper(node: Node, *argv: str, body: Any = None, stdin: bytes = b"") -> tuple[int, str, str]:
    if body is not None:
        stdin = json.dumps(body).encode()
    env = SimNodeEnv(fabric=node.fabric, host=node.host, run_tool=run_tool)
    done = run(list(argv), stdin, env)
    return done.rc, done.stdout.decode(), done.stderr.decode()


def snapshot(node: Node) -> Any:
    h = node.host
    return copy.deepcopy((h.files, h.volumes, h.copies, h.vms))


def prepared(node: Node) -> None:
    """An LV, its resource file and the resource up and primary, at term 5."""
    assert helper(node, "lv-create", "--term", "5", "corral", "web-d0", "64")[0] == 0
    assert helper(node, "drbd-config", "--term", "5", body=RES)[0] == 0
    assert helper(node, "drbdadm", "--term", "5", "create-md", "--force", "web-d0")[0] == 0
    assert helper(node, "drbdadm", "--term", "5", "up", "web-d0")[0] == 0
    assert helper(node, "drbdadm", "--term", "5", "primary", "--force", "web-d0")[0] == 0


OS: dict[str, Any] = {
    "os": "debootstrap+default",
    "instance": "web",
    "primary": "node1",
    "disks": [{"path": "/dev/drbd3", "size_mib": 64}],
}
OS_NIC = {"mac": "aa:00:00:00:00:01", "mode": "bridged", "link": "br0"}

REFUSED: list[tuple[tuple[str, ...], Any, str]] = [
    (("lv-create", "--term", "5", "corral", "web-d0\n", "64"), None, "LV 'web-d0\\n'"),
    (("lv-create", "--term", "5", "corral", "../etc-d0", "64"), None, "not a corral disk"),
    (("lv-create", "--term", "5", "corral", "web d0", "64"), None, "not a corral disk"),
    (("lv-create", "--term", "5", "corral", "root", "64"), None, "not a corral disk"),
    (("lv-create", "--term", "5", "x;id", "web-d0", "64"), None, "volume group 'x;id'"),
    (("lv-create", "--term", "5", "-corral", "web-d0", "64"), None, "option '-corral'"),
    (("lv-create", "--term", "5", "corral", "web-d0", "0"), None, "size in MiB"),
    (("lv-create", "--term", "5", "corral", "web-d0", "99999999999"), None, "size in MiB"),
    (("lv-create", "--term", "5", "corral", "web-d0", "64m"), None, "size in MiB"),
    (("lv-create", "--term", "5", "corral", "web-d0"), None, "takes VG LV SIZE_MIB"),
    (("lv-create", "corral", "web-d0", "64"), None, "needs --term"),
    (("lv-create", "--term", "0", "corral", "web-d0", "64"), None, "term '0'"),
    (("lv-create", "--term", "-1", "corral", "web-d0", "64"), None, "term '-1'"),
    (("lv-create", "--term=5", "corral", "web-d0", "64"), None, "option '--term=5'"),
    (("lv-create", "--term", "5", "--term", "6", "corral", "web-d0", "64"), None, "'--term'"),
    (("lv-remove", "--term", "5", "corral", "web-d0", "--config", "x"), None, "'--config'"),
    (("drbdadm", "--term", "5", "dump", "web-d0"), None, "sub-command 'dump'"),
    (("drbdadm", "--term", "5", "up", "--force", "web-d0"), None, "option '--force'"),
    (("drbdadm", "--term", "5", "up", "--config=/tmp/x", "web-d0"), None, "'--config=/tmp/x'"),
    (("drbdadm", "--term", "5", "up", "all"), None, "not a corral disk"),
    (("drbdadm", "--term", "5", "primary", "web-d0", "other-d0"), None, "takes SUBCOMMAND"),
    (("drbd-config", "--term", "5"), {**RES, "handlers": "rm -rf /"}, "unknown field 'handlers'"),
    (("drbd-config", "--term", "5"), {**RES, "resource": "global_common"}, "not a corral"),
    (("drbd-config", "--term", "5"), {**RES, "port": 80}, "port 80"),
    (("drbd-config", "--term", "5"), {**RES, "minor": True}, "minor True"),
    (("drbd-config", "--term", "5"), {**RES, "allow_two_primaries": "yes"}, "allow_two"),
    (
        ("drbd-config", "--term", "5"),
        {**RES, "hosts": [RES["hosts"][0], {**RES["hosts"][1], "address": "10.0.0.2;id"}]},
        "hosts[1].address",
    ),
    (
        ("drbd-config", "--term", "5"),
        {**RES, "hosts": [RES["hosts"][0], {**RES["hosts"][1], "node": "node2\n"}]},
        "hosts[1].node",
    ),
    (("drbd-config", "--term", "5"), {**RES, "hosts": RES["hosts"][:1]}, "exactly two"),
    (("drbd-config", "--term", "5"), "resource web-d0 { handlers { } }", "JSON object"),
    (("drbd-remove-config", "--term", "5", "../drbd"), None, "not a corral disk"),
    (("vm-start", "--term", "5"), {**VM, "extra_args": ["-chardev"]}, "'extra_args'"),
    (("vm-start", "--term", "5"), {**VM, "name": "web,file=/etc/shadow"}, "name"),
    (("vm-start", "--term", "5"), {**VM, "memory_mib": 10**9}, "memory_mib"),
    (("vm-start", "--term", "5"), {**VM, "disks": [{"index": 0, "minor": "/etc"}]}, "minor"),
    (("vm-start", "--term", "5"), {**VM, "disks": [{"index": 0, "file": "/etc/shadow"}]}, "file"),
    (("vm-start", "--term", "5"), {**VM, "incoming": {"address": "0 -S", "port": 4444}}, "addr"),
    (("os-create", "--term", "5"), {**OS, "os": "../../bin/sh"}, "not NAME or NAME+VARIANT"),
    (("os-create", "--term", "5"), {**OS, "os": "deb+x y"}, "not NAME or NAME+VARIANT"),
    (("os-create", "--term", "5"), {**OS, "script": "/bin/sh"}, "unknown field 'script'"),
    (
        ("os-create", "--term", "5"),
        {**OS, "disks": [{"path": "/etc/shadow", "size_mib": 1}]},
        "is not one /dev/drbdN",
    ),
    (("os-create", "--term", "5"), {**OS, "disks": []}, "disks must be a list of 1 to"),
    (("os-create", "--term", "5"), {**OS, "params": {"PATH": "/tmp"}}, "'PATH' is not a name"),
    (("os-create", "--term", "5"), {**OS, "params": {"x": "a\nb"}}, "printable ASCII"),
    (("os-create", "--term", "5"), {**OS, "hv": {"LD_PRELOAD": "/x.so"}}, "'LD_PRELOAD'"),
    (("os-create", "--term", "5"), {**OS, "nics": [{**OS_NIC, "mac": "x"}]}, "nics[0].mac"),
    (("os-create", "--term", "5"), {**OS, "nics": [{**OS_NIC, "link": "br0 x"}]}, "nics[0].link"),
    (("os-create", "--term", "5"), {**OS, "nics": [{**OS_NIC, "ip": "1.2.3.4;id"}]}, "nics[0].ip"),
    (("os-create", "--term", "5"), {**OS, "old_name": "x"}, "old_name is for os-rename only"),
    (("os-rename", "--term", "5"), OS, "old_name"),
    (("os-create",), OS, "needs --term"),
    (("vm-kill", "--term", "5", "web;reboot"), None, "VM name"),
    (("vm-stop", "--term", "5", "../../sbin/init"), None, "VM name"),
    (("probe", "--term", "5"), None, "option '--term'"),
    (("sh", "-c", "id"), None, "unknown verb 'sh'"),
    ((), None, "no verb"),
]


@pytest.mark.parametrize(("argv", "body", "says"), REFUSED)
def test_invalid_requests_are_refused_with_one_line_and_change_nothing(
    node: Node, argv: tuple[str, ...], body: Any, says: str
) -> None:
    prepared(node)
    before = snapshot(node)
    rc, out, err = helper(node, *argv, body=body)
    assert rc == 64, (rc, out, err)
    assert out == ""
    assert err.startswith("corral-node-helper: ") and err.count("\n") == 1, err
    assert says in err, err
    assert snapshot(node) == before


def test_accepted_verbs_change_what_they_say(node: Node) -> None:
    host = node.host
    prepared(node)
    assert host.volumes["web-d0"].size_mib == 64
    text = host.files["/etc/drbd.d/web-d0.res"].decode()
    assert text == resource_text(resource_request(RES))
    assert "handlers" not in text and "address 10.0.0.2:11003;" in text
    assert host.copies["web-d0"].role == "Primary"
    rc, _, err = helper(node, "vm-start", "--term", "5", body=VM)
    assert rc == 0, err
    assert host.vms["web"].memory_mib == 512 and host.vms["web"].drives == ["/dev/drbd3"]
    rc, out, _ = helper(node, "vm-kill", "--term", "5", "web")
    assert rc == 0 and "web" not in host.vms, out
    assert helper(node, "vm-kill", "--term", "5", "web")[1] == "web is not running\n"
    rc, _, err = helper(node, "lv-extend", "--term", "5", "corral", "web-d0", "128")
    assert rc == 0 and host.volumes["web-d0"].size_mib == 128, err
    assert helper(node, "drbdadm", "--term", "5", "secondary", "web-d0")[0] == 0
    assert helper(node, "drbdadm", "--term", "5", "down", "web-d0")[0] == 0
    assert helper(node, "drbd-remove-config", "--term", "5", "web-d0")[0] == 0
    assert "/etc/drbd.d/web-d0.res" not in host.files
    assert helper(node, "lv-remove", "--term", "5", "corral", "web-d0")[0] == 0
    assert host.volumes == {}


def test_vm_kill_only_signals_the_vm_its_pidfile_names(node: Node) -> None:
    host = node.host
    """A pidfile that names another process (pid reuse, a tampered file) is not
    followed: the helper checks /proc/PID/cmdline for this VM's qemu first."""
    prepared(node)
    assert helper(node, "vm-start", "--term", "5", body=VM)[0] == 0
    host.files["/run/corral/db.pid"] = host.files["/run/corral/web.pid"]
    rc, out, _ = helper(node, "vm-kill", "--term", "5", "db")
    assert rc == 0 and out == "db is not running\n"
    assert "web" in host.vms


def test_probe_sections_parse_with_the_orchestrators_parser(node: Node) -> None:
    prepared(node)
    assert helper(node, "vm-start", "--term", "5", body=VM)[0] == 0
    rc, out, _ = helper(node, "probe")
    assert rc == 0
    snap = parse_probe(out, volume_group="corral")
    assert snap.facts.hostname == "node1" and snap.facts.cpus == 4
    assert [v.name for v in snap.volumes] == ["web-d0"]
    assert [(r.name, r.role) for r in snap.drbd] == [("web-d0", "Primary")]
    assert [(v.name, v.memory_mib) for v in snap.vms] == [("web", 512)]
    assert snap.facts.bridges == ("br0",)
    # A helper older than the bridges section: bridges unknown, not "none".
    older = out.rsplit("@@corral-probe@@\n", 1)[0]
    assert parse_probe(older, volume_group="corral").facts.bridges is None


def test_a_stale_term_is_refused_and_a_newer_one_raises_the_nodes_term(node: Node) -> None:
    host = node.host
    prepared(node)
    before = snapshot(node)
    rc, out, err = helper(node, "drbdadm", "--term", "4", "secondary", "web-d0")
    assert (rc, out) == (75, "")
    assert err == (
        "corral-node-helper: drbdadm: term 4 is older than term 5, the newest this node"
        " has seen; refused\n"
    )
    assert snapshot(node) == before
    assert helper(node, "term") == (0, "5\n", "")
    assert helper(node, "drbdadm", "--term", "9", "secondary", "web-d0")[0] == 0
    assert helper(node, "term") == (0, "9\n", "")
    assert helper(node, "drbdadm", "--term", "5", "primary", "web-d0")[0] == 75
    assert host.copies["web-d0"].role == "Secondary"


def test_a_broken_term_file_refuses_every_mutating_verb(node: Node) -> None:
    host = node.host
    prepared(node)
    host.files["/var/lib/corral/term"] = b"garbage\n"
    before = snapshot(node)
    rc, _, err = helper(node, "drbdadm", "--term", "99", "secondary", "web-d0")
    assert rc == 70 and "holds 'garbage'" in err
    assert snapshot(node) == before
    assert helper(node, "probe")[0] == 0  # reading still works


def batch_stdin(*requests: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in requests)


def test_batch_runs_in_order_and_stops_a_group_at_its_first_failure(node: Node) -> None:
    host = node.host
    stdin = batch_stdin(
        {"argv": ["lv-create", "corral", "a-d0", "64"], "group": "a"},
        {"argv": ["lv-create", "corral", "a-d0", "64"], "group": "a"},  # exists: fails
        {"argv": ["lv-create", "corral", "a-d1", "64"], "group": "a"},  # skipped
        {"argv": ["lv-create", "corral", "b-d0", "64"], "group": "b"},  # another group runs
        {
            "argv": ["lv-remove", "corral", "c-d0"],
            "group": "c",
            "ok_if_stderr": "Failed to find logical volume",
        },
        {"argv": ["drbd-config"], "stdin": json.dumps(RES), "group": "c"},  # runs: tolerated
    )
    rc, out, err = helper(node, "batch", "--term", "3", stdin=stdin)
    assert rc == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["rc"] for r in results] == [0, 5, None, 0, 5, 0]
    assert results[2]["skipped"] is True and "group a failed" in results[2]["stderr"]
    assert "already exists" in results[1]["stderr"]
    assert sorted(host.volumes) == ["a-d0", "b-d0"]
    assert "/etc/drbd.d/web-d0.res" in host.files
    assert helper(node, "term") == (0, "3\n", "")


BAD_BATCHES = [
    ({"argv": ["batch"]}, "a batch cannot hold a batch"),
    ({"argv": ["lv-create", "--term", "9", "corral", "x-d0", "64"]}, "option '--term'"),
    ({"argv": ["lv-create", "corral", "x;id", "64"]}, "request 2: LV"),
    ({"argv": ["drbd-config"], "stdin": json.dumps({**RES, "x": 1})}, "unknown field 'x'"),
    ({"argv": ["lv-create"], "shell": "id"}, "unknown field 'shell'"),
    ({"argv": "lv-create corral x-d0 64"}, "list of strings"),
    ({"argv": ["probe"], "ok_if_stderr": "("}, "not a regular expression"),
]


@pytest.mark.parametrize(("bad", "says"), BAD_BATCHES)
def test_a_batch_with_one_invalid_request_runs_nothing(
    node: Node, bad: dict[str, Any], says: str
) -> None:
    prepared(node)
    before = snapshot(node)
    stdin = batch_stdin({"argv": ["lv-create", "corral", "first-d0", "64"]}, bad)
    rc, out, err = helper(node, "batch", "--term", "7", stdin=stdin)
    assert rc == 64 and out == "" and says in err, err
    assert err.count("\n") == 1
    assert snapshot(node) == before  # not even the valid first request, nor the term


def test_a_batch_of_a_stale_term_runs_nothing(node: Node) -> None:
    prepared(node)
    before = snapshot(node)
    stdin = batch_stdin({"argv": ["lv-create", "corral", "first-d0", "64"]})
    rc, _, err = helper(node, "batch", "--term", "2", stdin=stdin)
    assert rc == 75 and "term 2 is older than term 5" in err
    assert snapshot(node) == before


def test_image_write_checks_the_sha256_before_touching_the_disk(node: Node) -> None:
    """`image-write` writes an image onto the DRBD device only when its sha256 is the
    catalogue's; a missing or altered image, or a bad argument, writes nothing."""
    import hashlib

    prepared(node)
    image = b"a tiny qcow2 image"
    good = hashlib.sha256(image).hexdigest()
    node.host.files["/var/lib/corral/images/debian-12.qcow2"] = image
    before = snapshot(node)
    rc, _, err = helper(
        node, "image-write", "--term", "5", "debian-12.qcow2", "0" * 64, "qcow2", "3"
    )
    assert rc == 65 and f"sha256 of /var/lib/corral/images/debian-12.qcow2 is {good}" in err
    assert "nothing was written" in err and node.host.images == {}
    rc, _, err = helper(node, "image-write", "--term", "5", "nope.raw", good, "raw", "3")
    assert rc == 66 and "/var/lib/corral/images/nope.raw is not on this node" in err
    for argv, why in (
        (("../etc.raw", good, "raw", "3"), "image '../etc.raw'"),
        (("debian-12.qcow2", "ABC", "qcow2", "3"), "sha256 'ABC'"),
        (("debian-12.qcow2", good, "vmdk", "3"), "format 'vmdk'"),
        (("debian-12.qcow2", good, "qcow2", "x"), "minor 'x'"),
    ):
        rc, _, err = helper(node, "image-write", "--term", "5", *argv)
        assert rc == 64 and why in err, (argv, err)
    assert snapshot(node) == before and node.host.images == {}
    rc, _, err = helper(node, "image-write", "--term", "5", "debian-12.qcow2", good, "qcow2", "3")
    assert rc == 0, err
    assert node.host.images == {"/dev/drbd3": good}


def test_lv_rename_keeps_the_drbd_metadata_and_refuses_an_lv_in_use(node: Node) -> None:
    """A rename of a stopped instance: refused while the resource is up, then the
    LV and the metadata on it move to the new name, and the resource comes up
    under it with the same data generation."""
    host = node.host
    prepared(node)
    generation = host.copies["web-d0"].current
    rc, _, err = helper(node, "lv-rename", "--term", "5", "corral", "web-d0", "www-d0")
    assert rc == 5 and "in use" in err and "web-d0" in host.volumes, err
    assert helper(node, "drbdadm", "--term", "5", "secondary", "web-d0")[0] == 0
    assert helper(node, "drbdadm", "--term", "5", "down", "web-d0")[0] == 0
    assert helper(node, "drbd-remove-config", "--term", "5", "web-d0")[0] == 0
    rc, out, err = helper(node, "lv-rename", "--term", "5", "corral", "web-d0", "www-d0")
    assert rc == 0 and out == '  Renamed "web-d0" to "www-d0" in volume group "corral"\n', err
    assert list(host.volumes) == ["www-d0"] and list(host.copies) == ["www-d0"]
    assert helper(node, "drbd-config", "--term", "5", body={**RES, "resource": "www-d0"})[0] == 0
    assert helper(node, "drbdadm", "--term", "5", "adjust", "www-d0")[0] == 0
    assert host.copies["www-d0"].up and host.copies["www-d0"].current == generation
    rc, _, err = helper(node, "lv-rename", "--term", "5", "corral", "web-d0", "www-d0")
    assert rc == 5 and 'Existing logical volume "web-d0" not found' in err, err
    rc, _, err = helper(node, "lv-rename", "--term", "5", "corral", "www-d0", "root")
    assert rc == 64 and "not a corral disk" in err, err
