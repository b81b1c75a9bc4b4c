"""Cloud-init seed images leave the nodes with their instance, against real etcd and
the simulated lab over SSH: removing an instance (`state: absent`) takes its
/var/lib/corral/seed/NAME.img off every node with its disks, and renaming one takes
the old name's seed away. Assertions look at what the nodes answer over SSH."""

from __future__ import annotations

import hashlib
from pathlib import Path

from simulators.lab import HostConfig
from tests.lab.instances.test_os_install import IMAGE, catalogue, instance
from tests.lab.instances.test_stopped_create import node_run
from tests.support.cluster.cluster_harness import Cluster, cluster
from tests.support.cluster.events import cluster_yaml

NODES = ("node1", "node2")


async def seeds_on(c: Cluster, node: str, *names: str) -> list[str]:
    """Which of the names' seed images the node says it has."""
    found = []
    for name in names:
        rc, _ = await node_run(c.lab, node, f"test -e /var/lib/corral/seed/{name}.img")
        if rc == 0:
            found.append(name)
    return found


async def test_removed_and_renamed_instances_leave_no_seed_behind(tmp_path: Path) -> None:
    hosts = [HostConfig(name=n, memory_mib=4096) for n in NODES]
    async with cluster(tmp_path, hosts=hosts) as c:
        await c.start_engine()
        for host in c.lab.fabric.hosts.values():
            host.files["/var/lib/corral/images/tiny.raw"] = IMAGE
        images = catalogue(tiny_sha=hashlib.sha256(IMAGE).hexdigest())
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, instance("web1", "tiny") + instance("web2", "tiny")) + images)
        applied = await c.corral("apply", "-f", str(f), "--wait", "--timeout", "60")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert await seeds_on(c, "node1", "web1", "web2") == ["web1", "web2"]

        # Removed: the VM stopped, the disks and the seed gone from both nodes.
        absent = "  - name: web1\n    state: absent\n"
        f.write_text(cluster_yaml(c, absent + instance("web2", "tiny")) + images)
        removed = await c.corral("apply", "-f", str(f), "--wait", "--timeout", "60")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        await c.wait_for(
            "web1's disks gone",
            lambda: not any("web1-d0" in h.copies for h in c.lab.fabric.hosts.values()),
        )
        await c.wait_for("converged", c.converged)
        for node in NODES:
            assert await seeds_on(c, node, "web1") == [], node
        assert await seeds_on(c, "node1", "web2") == ["web2"]  # the other one's stays

        # Renamed (stopped first): the old name's seed goes; the new name gets one at
        # its next start.
        stopped = await c.corral("instance", "stop", "web2", "--wait")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        renamed = await c.corral("instance", "rename", "web2", "web3", "--wait")
        assert renamed.returncode == 0, renamed.stdout + renamed.stderr
        for node in NODES:
            assert await seeds_on(c, node, "web2", "web3") == [], node
        started = await c.corral("instance", "start", "web3", "--wait")
        assert started.returncode == 0, started.stdout + started.stderr
        await c.wait_for("web3 runs", lambda: c.running_on("web3") == ["node1"])
        assert await seeds_on(c, "node1", "web2", "web3") == ["web3"]
