"""OS provisioning against real etcd and the simulated lab: `os:` names an image of
the file's catalogue; creating the instance writes the image onto its new DRBD
device on the primary (from the nodes' image directory, or fetched from a URL)
and attaches a cloud-init seed the node helper wrote (an unknown image, refused at
plan time with file and line, is tests.unit.desired.test_os_images'); a reinstall writes
another image and a new seed; an image with another checksum, or missing on the
node, fails the create naming image and node with nothing written and no VM
started. Ganeti's stock RAPI client's ReinstallInstance then writes it once the
image is fixed, and a RAPI create naming a catalogue image gets it. Assertions
look at the simulated hosts (what reached /dev/drbdN, the seed files, the qemu
argv) and at the recorded events."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from events.ids import InstanceName
from events.specs import PowerState
from orchestrator.rapi.users import RapiUsers
from simulators.fabric import Host
from simulators.lab import HostConfig
from tests.lab.faces.test_rapi import CLIENT_MODULE, USERS, rapi, require_debian, stock_client
from tests.support.cluster.cluster_harness import Cluster, cluster
from tests.support.cluster.events import cluster_yaml

IMAGE = b"corral tiny os image\n" * 100
NET_IMAGE = b"an image served over http\n" * 50
URL = "http://images.example.org/net-1.raw"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@x"


def catalogue(*, tiny_sha: str) -> str:
    return f"""images:
  - name: tiny
    source: /var/lib/corral/images/tiny.raw
    sha256: {tiny_sha}
  - name: net
    source: {URL}
    sha256: {hashlib.sha256(NET_IMAGE).hexdigest()}
    format: raw
"""


def instance(name: str, os_name: str) -> str:
    return f"""  - name: {name}
    memory: 256M
    disks: [1G]
    primary: node1
    os: {os_name}
    nics: [{{link: br0, ip: 10.9.0.5}}]
    cloud_init:
      ssh_keys: ["{KEY}"]
"""


def minor_of(host: Host, resource: str) -> int:
    return host.copies[resource].config.hosts[host.name].minor


def vm_argv(c: Cluster, name: str) -> list[str] | None:
    for host in c.lab.fabric.hosts.values():
        for vm in host.vms.values():
            if vm.name == name and vm.status == "running":
                return list(vm.argv)
    return None


async def test_create_writes_the_image_and_attaches_a_seed(tmp_path: Path) -> None:
    hosts = [HostConfig(name=n, memory_mib=4096) for n in ("node1", "node2")]
    async with cluster(tmp_path, hosts=hosts) as c:
        engine = await c.start_engine()
        node1 = c.lab.fabric.hosts["node1"]
        for host in c.lab.fabric.hosts.values():
            host.files["/var/lib/corral/images/tiny.raw"] = IMAGE
        c.lab.fabric.web[URL] = NET_IMAGE
        tiny_sha = hashlib.sha256(IMAGE).hexdigest()
        f = tmp_path / "cluster.yaml"

        # A path on the nodes and a URL: both written onto the new DRBD device.
        f.write_text(
            cluster_yaml(c, instance("web1", "tiny") + instance("web2", "net"))
            + catalogue(tiny_sha=tiny_sha)
        )
        applied = await c.corral("apply", "-f", str(f), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "web1: OS image tiny written on node1" in applied.stdout, applied.stdout
        for name, data in (("web1", IMAGE), ("web2", NET_IMAGE)):
            device = f"/dev/drbd{minor_of(node1, f'{name}-d0')}"
            assert node1.images[device] == hashlib.sha256(data).hexdigest()
            seed = f"/var/lib/corral/seed/{name}.img"
            assert seed in node1.private and node1.files[seed][510:512] == b"\x55\xaa"
            argv = vm_argv(c, name)
            assert argv is not None and any(f"file={seed}" in a for a in argv), argv
            assert engine.state.installs[InstanceName(name)].done
        assert node1.files["/var/lib/corral/images/net"] == NET_IMAGE
        assert not c.lab.fabric.hosts["node2"].images  # the secondary only syncs
        seed_text = node1.files["/var/lib/corral/seed/web1.img"]
        assert b'"local-hostname": "web1"' in seed_text and KEY.encode() in seed_text
        assert b'"10.9.0.5/24"' in seed_text

        # Reinstall with another image: refused without confirmation or with an image
        # the catalogue lacks (nothing recorded); then stop, write, new seed, start.
        revision = engine.state.revision
        unconfirmed = await c.corral("instance", "reinstall", "web1", "--os", "net")
        assert unconfirmed.returncode != 0 and "pass --yes" in unconfirmed.stderr
        unknown = await c.corral("instance", "reinstall", "web1", "--os", "nope", "--yes")
        assert unknown.returncode != 0 and "images: net, tiny" in unknown.stderr, unknown.stderr
        assert engine.state.revision == revision
        first_seed = node1.files["/var/lib/corral/seed/web1.img"]
        first_pid = next(v.pid for v in node1.vms.values() if v.name == "web1")
        again = await c.corral("instance", "reinstall", "web1", "--os", "net", "--yes", "--wait")
        assert again.returncode == 0, again.stdout + again.stderr
        device = f"/dev/drbd{minor_of(node1, 'web1-d0')}"
        assert node1.images[device] == hashlib.sha256(NET_IMAGE).hexdigest()
        assert engine.state.desired.instances[InstanceName("web1")].os == "net"
        assert node1.files["/var/lib/corral/seed/web1.img"] != first_seed  # new instance-id
        running = [v for v in node1.vms.values() if v.name == "web1" and v.status == "running"]
        assert len(running) == 1 and running[0].pid != first_pid
        history = await c.corral("events", "--object", "web1", "--type", "instance.", "--json")
        types = [e["type"] for e in json.loads(history.stdout)]
        assert types.count("instance.installed") == 2, types
        assert "instance.reinstall_requested" in types, types


async def test_wrong_checksum_or_missing_image_writes_nothing(tmp_path: Path) -> None:
    hosts = [HostConfig(name=n, memory_mib=4096) for n in ("node1", "node2")]
    async with cluster(tmp_path, hosts=hosts) as c:
        engine = await c.start_engine()
        node1 = c.lab.fabric.hosts["node1"]
        node1.files["/var/lib/corral/images/tiny.raw"] = IMAGE + b"altered"
        f = tmp_path / "cluster.yaml"
        f.write_text(
            cluster_yaml(c, instance("web1", "tiny") + instance("web2", "net"))
            + catalogue(tiny_sha=hashlib.sha256(IMAGE).hexdigest())
        )
        applied = await c.corral("apply", "-f", str(f), "--wait", "--timeout", "60")
        assert applied.returncode == 1, applied.stdout + applied.stderr
        out = applied.stdout
        assert "web1: OS image tiny not written on node1" in out, out
        assert "sha256 of /var/lib/corral/images/tiny.raw is" in out, out
        assert "web2: OS image net not written on node1" in out, out
        assert f"fetching {URL} failed" in out, out
        for host in c.lab.fabric.hosts.values():
            assert not host.images, host.images  # no disk was touched
            assert not [p for p in host.files if p.startswith("/var/lib/corral/seed/")]
            assert "/var/lib/corral/images/net" not in host.files
        assert vm_argv(c, "web1") is None and vm_argv(c, "web2") is None
        failed = engine.state.installs[InstanceName("web1")]
        assert not failed.done and failed.error.startswith("on node1: write image tiny"), failed

        # The image fixed on the node, Ganeti's stock client reinstalls web1 (osparams
        # are refused with 400, an image takes none; nothing recorded): written, started.
        require_debian(CLIENT_MODULE, "python3-ganeti-rapi")
        node1.files["/var/lib/corral/images/tiny.raw"] = IMAGE
        async with (
            rapi(c, RapiUsers.from_text(USERS)) as port,
            stock_client(tmp_path, port, "root", "rootpw") as gc,
        ):
            refused = await gc.try_call("ReinstallInstance", "web1", osparams={"x": "1"})
            assert refused["code"] == 400, refused
            assert "images take no OS parameters" in refused["error"], refused
            assert await gc.call("GetOperatingSystems") == ["net", "none", "tiny"]
            done = await gc.run_job(await gc.call("ReinstallInstance", "web1"))
            assert done["ops"][0]["OP_ID"] == "OP_INSTANCE_REINSTALL", done
            # A RAPI create whose os_type is an image of the applied catalogue gets it.
            created = await gc.call(
                "CreateInstance", "create", "web3", "drbd", [{"size": 1024}], [],
                os="tiny", pnode="node1", snode="node2", beparams={"maxmem": 256},
            )  # fmt: skip
            await gc.run_job(created)
            # Ganeti's no_startup: written again and left stopped (recorded in the
            # spec); the default `start` runs it again.
            kept = await gc.run_job(await gc.call("ReinstallInstance", "web1", no_startup=True))
            assert kept["status"] == "success", kept
            web1 = engine.state.desired.instances[InstanceName("web1")]
            assert web1.power == PowerState.STOPPED, web1
            await c.wait_for("web1 stopped", lambda: vm_argv(c, "web1") is None)
            await gc.run_job(await gc.call("ReinstallInstance", "web1"))
            await c.wait_for("web1 started", lambda: vm_argv(c, "web1") is not None)
        sha = hashlib.sha256(IMAGE).hexdigest()
        devices = [f"/dev/drbd{minor_of(node1, f'{n}-d0')}" for n in ("web1", "web3")]
        assert node1.images == dict.fromkeys(devices, sha)
        assert vm_argv(c, "web1") is not None and vm_argv(c, "web2") is None
        assert vm_argv(c, "web3") is not None
