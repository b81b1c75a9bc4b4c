"""An instance declared `state: stopped` from its creation, against real etcd and
the simulated lab over SSH: its DRBD pairs get their initial sync anyway (both
sides UpToDate, both Secondary) and its OS image is written, with no qemu on any
node; a reinstall while stopped writes the image and leaves it stopped; a later
`state: running` starts it on those disks. Assertions look at what
the nodes themselves report (`drbdsetup status --json`, `pgrep`) and at what
reached their /dev/drbdN."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import asyncssh

from simulators.lab import HostConfig, Lab
from tests.lab.instances.test_os_install import IMAGE, catalogue, minor_of
from tests.support.cluster.cluster_harness import cluster
from tests.support.cluster.events import cluster_yaml


def stopped(name: str, *, state: str, os_name: str = "none") -> str:
    return f"""  - name: {name}
    memory: 256M
    disks: [1G, 512M]
    primary: node1
    secondary: node2
    os: {os_name}
    state: {state}
"""


async def node_run(lab: Lab, node: str, cmd: str) -> tuple[int, str]:
    async with asyncssh.connect(
        "127.0.0.1",
        lab.servers[node].port,
        username="root",
        client_keys=[str(lab.client_key_path)],
        known_hosts=str(lab.known_hosts_path),
    ) as conn:
        r = await conn.run(cmd)
        return int(r.exit_status or 0), str(r.stdout)


async def drbd_view(lab: Lab, node: str, resource: str) -> tuple[str, str, str]:
    """(role, disk, peer disk) of `resource` as drbdsetup on `node` reports it."""
    rc, out = await node_run(lab, node, f"drbdsetup status --json {resource}")
    assert rc == 0, out
    (res,) = json.loads(out)
    peer = res["connections"][0]["peer_devices"][0]["peer-disk-state"]
    return res["role"], res["devices"][0]["disk-state"], peer


async def test_stopped_from_creation_syncs_its_disks_and_installs_without_qemu(
    tmp_path: Path,
) -> None:
    hosts = [HostConfig(name=n, memory_mib=4096) for n in ("node1", "node2")]
    async with cluster(tmp_path, hosts=hosts) as c:
        await c.start_engine()
        node1 = c.lab.fabric.hosts["node1"]
        for host in c.lab.fabric.hosts.values():
            host.files["/var/lib/corral/images/tiny.raw"] = IMAGE
        sha = hashlib.sha256(IMAGE).hexdigest()
        f = tmp_path / "cluster.yaml"
        f.write_text(
            cluster_yaml(
                c,
                stopped("cold", state="stopped")
                + stopped("imaged", state="stopped", os_name="tiny"),
            )
            + catalogue(tiny_sha=sha)
        )
        applied = await c.corral("apply", "-f", str(f), "--wait", "--timeout", "60")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        await c.wait_for("stopped instances converged", c.converged)
        for name in ("cold", "imaged"):
            for disk in (f"{name}-d0", f"{name}-d1"):
                for node in ("node1", "node2"):
                    view = await drbd_view(c.lab, node, disk)
                    assert view == ("Secondary", "UpToDate", "UpToDate"), (node, disk, view)
        for node in ("node1", "node2"):
            rc, out = await node_run(c.lab, node, "pgrep -a qemu-system")
            assert rc == 1 and not out, (node, out)
        # The image went onto the stopped instance's first disk at creation (Ganeti's
        # create runs whatever the run state), on the primary only.
        device = f"/dev/drbd{minor_of(node1, 'imaged-d0')}"
        assert node1.images == {device: sha}, node1.images
        assert not c.lab.fabric.hosts["node2"].images

        # A reinstall of a stopped instance (as Ganeti's, which wants it down): the
        # image written, the disks back to Secondary, still no qemu.
        again = await c.corral("instance", "reinstall", "cold", "--os", "tiny", "--yes", "--wait")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "written (the instance stays stopped)" in again.stdout, again.stdout
        cold = f"/dev/drbd{minor_of(node1, 'cold-d0')}"
        assert node1.images == {device: sha, cold: sha}, node1.images
        for node in ("node1", "node2"):
            view = await drbd_view(c.lab, node, "cold-d0")
            assert view == ("Secondary", "UpToDate", "UpToDate"), (node, view)
            rc, out = await node_run(c.lab, node, "pgrep -a qemu-system")
            assert rc == 1 and not out, (node, out)

        # Started later: on those disks, with no second write of the image.
        f.write_text(
            cluster_yaml(
                c,
                stopped("cold", state="running", os_name="tiny")
                + stopped("imaged", state="running", os_name="tiny"),
            )
            + catalogue(tiny_sha=sha)
        )
        started = await c.corral("apply", "-f", str(f), "--wait", "--timeout", "60")
        assert started.returncode == 0, started.stdout + started.stderr
        await c.wait_for("both running", lambda: c.running_on("cold") == c.running_on("imaged"))
        assert c.running_on("cold") == ["node1"] and c.running_on("imaged") == ["node1"]
        for name in ("cold", "imaged"):
            rc, out = await node_run(c.lab, "node1", f"pgrep -a 'qemu-system.* -name {name}'")
            assert rc == 0 and f"/dev/drbd{minor_of(node1, f'{name}-d1')}" in out, out
            assert (await drbd_view(c.lab, "node1", f"{name}-d0"))[:2] == ("Primary", "UpToDate")
        assert node1.images == {device: sha, cold: sha}
