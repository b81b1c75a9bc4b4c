"""NIC hotplug from the desired-state file against real etcd and the simulated lab: a
NIC added to a running instance's entry is recorded and plugged into its qemu over
QMP by an `instance.hotplug` job (the device id, PCI slot and MAC a cold start would
give it, its tap on the bridge); one the running qemu refuses fails the job with
qemu's reason, is taken back out of the spec and leaves the VM as it was."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from events.ids import InstanceName, JobId
from events.state import JobState
from orchestrator.rapi.users import RapiUsers
from simulators.fabric import Vm
from tests.lab.faces.test_rapi import CLIENT_MODULE, USERS, rapi, require_debian, stock_client
from tests.support.cluster.cluster_harness import Cluster, cluster
from tests.support.cluster.events import cluster_yaml

WEB1 = """  - name: web1
    memory: 256M
    vcpus: 1
    disks: [1G]
    nics:
{nics}"""


def nics(n: int) -> str:
    return "".join(f"      - {{link: br0, mac: 'aa:00:00:00:01:0{i}'}}\n" for i in range(n))


def vm(c: Cluster, node: str) -> Vm:
    return c.lab.fabric.hosts[node].vms["web1"]


def hotplug_jobs(engine_jobs: Mapping[JobId, JobState]) -> list[JobState]:
    return sorted(
        (j for j in engine_jobs.values() if j.kind == "instance.hotplug"),
        key=lambda j: j.submitted_at,
    )


async def test_nic_added_in_the_file_is_hotplugged_or_refused_whole(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, WEB1.format(nics=nics(1))))
        applied = await c.corral("apply", "-f", str(f), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        name = InstanceName("web1")
        node = engine.state.placements[name].primary
        started_pid = vm(c, node).pid

        f.write_text(cluster_yaml(c, WEB1.format(nics=nics(2))))
        plan = await c.corral("plan", "-f", str(f))
        assert "nics[1] hotplugged into the running VM" in plan.stdout, plan.stdout
        applied = await c.corral("apply", "-f", str(f))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        await c.wait_for(
            "the hotplug job ends",
            lambda: any(j.status == "success" for j in hotplug_jobs(engine.state.jobs)),
        )
        plugged = vm(c, node)
        assert plugged.pid == started_pid  # plugged live, not restarted
        assert plugged.devices["nic-n1"] == "0x16", plugged.devices
        tap = plugged.netdevs["net-n1"]
        assert plugged.taps[tap] == "br0", plugged.taps
        assert len(engine.state.desired.instances[name].nics) == 2

        # The running qemu refuses the next one (its PCI slot is taken): the job
        # fails with qemu's reason, the NIC is taken back out, the VM is unchanged.
        plugged.devices["other-device"] = "0x17"
        devices, netdevs = dict(plugged.devices), dict(plugged.netdevs)
        f.write_text(cluster_yaml(c, WEB1.format(nics=nics(3))))
        applied = await c.corral("apply", "-f", str(f))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        await c.wait_for(
            "the refused hotplug ends",
            lambda: any(j.status == "error" for j in hotplug_jobs(engine.state.jobs)),
        )
        failed = next(j for j in hotplug_jobs(engine.state.jobs) if j.status == "error")
        assert "qemu refused device_add" in failed.error, failed.error
        assert "in use by pci-device,id=other-device" in failed.error, failed.error
        assert "nics[2] taken back out of its spec" in failed.error, failed.error
        assert len(engine.state.desired.instances[name].nics) == 2
        assert (vm(c, node).devices, vm(c, node).netdevs) == (devices, netdevs)
        again = await c.corral("plan", "-f", str(f))
        assert "nics[2] hotplugged into the running VM" in again.stdout, again.stdout


DB1 = """  - name: db1
    memory: 256M
    vcpus: 1
    disks: [{disks}]
"""


async def test_disk_added_in_the_file_gets_a_drbd_pair_then_is_hotplugged(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, DB1.format(disks="1G")))
        applied = await c.corral("apply", "-f", str(f), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        name = InstanceName("db1")
        placement = engine.state.placements[name]
        p, s = (c.lab.fabric.hosts[n] for n in (placement.primary, placement.secondary))
        pid = p.vms["db1"].pid

        f.write_text(cluster_yaml(c, DB1.format(disks="1G, 512M")))
        plan = await c.corral("plan", "-f", str(f))
        assert "disk 1 (512M) added: a new DRBD pair, hotplugged" in plan.stdout, plan.stdout
        assert (await c.corral("apply", "-f", str(f))).returncode == 0
        await c.wait_for(
            "the disk hotplug job ends",
            lambda: any(j.status in ("success", "error") for j in hotplug_jobs(engine.state.jobs)),
            timeout=120,
        )
        job = hotplug_jobs(engine.state.jobs)[0]
        assert job.status == "success", (job.error, job.log)
        disk1 = engine.state.placements[name].disks[1]
        assert disk1.minor != placement.disks[0].minor
        vm_now = p.vms["db1"]
        assert vm_now.pid == pid and vm_now.devices["disk-d1"] == "0x5", vm_now.devices
        assert vm_now.block_nodes["drive-d1"] == f"/dev/drbd{disk1.minor}", vm_now.block_nodes
        for host in (p, s):
            assert host.volumes["db1-d1"].size_mib == 512
            assert host.copies["db1-d1"].disk == "UpToDate"
        assert p.copies["db1-d1"].role == "Primary"

        # Refused by the running qemu (the slot is taken): nothing of disk 2 is left.
        vm_now.devices["other-device"] = "0x6"
        devices, nodes_before = dict(vm_now.devices), dict(vm_now.block_nodes)
        f.write_text(cluster_yaml(c, DB1.format(disks="1G, 512M, 256M")))
        assert (await c.corral("apply", "-f", str(f))).returncode == 0
        await c.wait_for(
            "the refused disk hotplug ends",
            lambda: any(j.status == "error" for j in hotplug_jobs(engine.state.jobs)),
            timeout=120,
        )
        failed = next(j for j in hotplug_jobs(engine.state.jobs) if j.status == "error")
        assert "qemu refused device_add" in failed.error, failed.error
        assert "in use by pci-device,id=other-device" in failed.error, failed.error
        assert "disks [2] taken back out" in failed.error, failed.error
        assert len(engine.state.desired.instances[name].disks) == 2
        assert len(engine.state.placements[name].disks) == 2
        assert (vm_now.devices, vm_now.block_nodes) == (devices, nodes_before)
        for host in (p, s):
            assert "db1-d2" not in host.volumes and "db1-d2" not in host.copies, host.name
            assert "/etc/drbd.d/db1-d2.res" not in host.files

        # Ganeti's stock client: ModifyInstance(disks=[("add", ...)], nics=[...]).
        del vm_now.devices["other-device"]
        require_debian(CLIENT_MODULE, "python3-ganeti-rapi")
        async with (
            rapi(c, RapiUsers.from_text(USERS)) as port,
            stock_client(tmp_path, port, "root", "rootpw") as gc,
        ):
            job = await gc.call("ModifyInstance", "db1", disks=[["add", {"size": 256}]])
            done = await gc.run_job(job)
            assert done["ops"][0]["OP_ID"] == "OP_INSTANCE_SET_PARAMS", done
            job = await gc.call("ModifyInstance", "db1", nics=[["add", -1, {"link": "br0"}]])
            await gc.run_job(job)
            # Removal exists (tests/lab/instances/test_device_removal.py), but only of
            # the last disk of a stopped instance: disk 0 of a running one is refused.
            jobs, spec_now = len(engine.state.jobs), engine.state.desired.instances[name]
            removal = await gc.try_call("ModifyInstance", "db1", disks=[["remove", 0, {}]])
            assert removal["code"] == 400, removal
            assert "only the last disk" in removal["error"], removal
            assert "must be stopped" in removal["error"], removal
            assert (len(engine.state.jobs), engine.state.desired.instances[name]) == (
                jobs,
                spec_now,
            )
            too_big = await gc.try_call("ModifyInstance", "db1", disks=[["add", {"size": 10**7}]])
            assert too_big["code"] == 400 and "disks" in too_big["error"], too_big
        await c.wait_for(
            "disk 2 and nic 0 plugged",
            lambda: "disk-d2" in vm_now.devices and "nic-n0" in vm_now.devices,
            timeout=120,
        )
        spec = engine.state.desired.instances[name]
        assert [d.size_mib for d in spec.disks] == [1024, 512, 256]
        assert spec.nics[0].mac is not None and spec.nics[0].mac.startswith("aa:00:00")
        assert vm_now.pid == pid
