"""Hypervisor parameters against real etcd and the simulated lab: `hvparams` at
cluster, node group and instance level in the desired-state file, merged as Ganeti
fills them (instance over group over cluster), reach the qemu command line the
node helper builds; a change shows in `corral plan` as an in-place change with its
restart need; bad values are refused naming file, line and field, recording
nothing; Ganeti's stock client changes them with `ModifyInstance(hvparams=)`."""

from __future__ import annotations

from pathlib import Path

from events.ids import GroupName, InstanceName
from orchestrator.rapi.users import RapiUsers
from tests.lab.faces.test_rapi import CLIENT_MODULE, USERS, rapi, require_debian, stock_client
from tests.support.cluster.cluster_harness import Cluster, cluster
from tests.support.cluster.events import cluster_yaml

INSTANCES = """  - name: web1
    memory: 256M
    vcpus: 1
    disks: [1G]
    primary: node1
    nics: [{{link: br0}}]
    hvparams: {{cpu_type: {cpu}, reboot_behavior: exit, nic_type: paravirtual}}
  - name: db1
    memory: 256M
    vcpus: 1
    disks: [1G]
    nics: [{{link: br0}}]
    primary: node2
"""
CLUSTER_HV = "  hvparams: {machine_type: pc, disk_cache: writeback, kvm_flag: disabled}\n"
GROUPS = """groups:
  - name: default
    hvparams: {disk_cache: none, usb_mouse: tablet, nic_type: e1000}
"""


def with_hv(c: Cluster, *, cpu: str = "host") -> str:
    text = cluster_yaml(c, INSTANCES.format(cpu=cpu))
    text = text.replace("  policy:\n", CLUSTER_HV + "  policy:\n", 1)
    return text.replace("nodes:\n", GROUPS + "nodes:\n", 1)


def argv_of(c: Cluster, name: str) -> list[str]:
    for host in c.lab.fabric.hosts.values():
        vm = host.vms.get(name)
        if vm is not None and vm.status == "running":
            return vm.argv
    return []


def after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


async def test_hvparams_merge_from_the_file_into_qemu_and_change_in_place(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(with_hv(c))
        applied = await c.corral("apply", "-f", str(f), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        spec = engine.state.desired.instances[InstanceName("web1")]
        assert spec.hv.given() == {
            "cpu_type": "host",
            "reboot_behavior": "exit",
            "nic_type": "paravirtual",
        }
        assert engine.state.desired.groups[GroupName("default")].hv.usb_mouse == "tablet"
        assert engine.state.desired.policy.hv.disk_cache == "writeback"

        await c.wait_for("web1 and db1 run", lambda: bool(argv_of(c, "web1") and argv_of(c, "db1")))
        web1, db1 = argv_of(c, "web1"), argv_of(c, "db1")
        # instance's own, group's over cluster's, cluster's where nobody says
        assert after(web1, "-cpu") == ["host"] and "-no-reboot" in web1, web1
        assert after(web1, "-machine") == ["pc,accel=tcg"], web1
        assert any("cache.direct=on" in d for d in after(web1, "-drive")), web1
        assert "usb-tablet" in after(web1, "-device"), web1
        assert after(db1, "-cpu") == [] and "-no-reboot" not in db1, db1
        # nic_type: the instance's paravirtual (virtio-net) over its group's e1000
        nic = [d.split(",")[0] for d in after(web1, "-device") if "id=nic-n0" in d]
        assert nic == ["virtio-net-pci"], web1
        nic = [d.split(",")[0] for d in after(db1, "-device") if "id=nic-n0" in d]
        assert nic == ["e1000"], db1

        # A change in the file: in place, restart needed; recorded; the VM keeps its
        # old parameters until a reboot.
        f.write_text(with_hv(c, cpu="qemu64"))
        plan = await c.corral("plan", "-f", str(f))
        assert plan.returncode == 2, plan.stdout + plan.stderr  # 2: changes to apply
        assert "hvparams.cpu_type: host -> qemu64" in plan.stdout, plan.stdout
        f.write_text(with_hv(c).replace("disk_cache: writeback", "disk_cache: writethrough"))
        cluster_change = await c.corral("plan", "-f", str(f))
        assert "hvparams.disk_cache: writeback -> writethrough" in cluster_change.stdout
        assert "hvparams take effect at each instance's next start" in cluster_change.stdout
        f.write_text(with_hv(c, cpu="qemu64"))
        assert "restart needed: hvparams" in plan.stdout, plan.stdout
        assert (await c.corral("apply", "-f", str(f))).returncode == 0
        assert after(argv_of(c, "web1"), "-cpu") == ["host"]
        rebooted = await c.corral("instance", "reboot", "web1", "--wait")
        assert rebooted.returncode == 0, rebooted.stdout + rebooted.stderr
        await c.wait_for("qemu64", lambda: after(argv_of(c, "web1"), "-cpu") == ["qemu64"])

        # Bad values: file, line and field; nothing recorded.
        revision = engine.state.revision
        bad = with_hv(c, cpu="'host;reboot'").replace("disk_cache: writeback", "disk_cache: fast")
        f.write_text(bad)
        refused = await c.corral("apply", "-f", str(f))
        assert refused.returncode != 0
        line = next(i for i, t in enumerate(bad.splitlines(), 1) if "disk_cache: fast" in t)
        assert f"cluster.yaml:{line}:" in refused.stderr, refused.stderr
        assert "'fast' is not one of: none, writethrough" in refused.stderr, refused.stderr
        assert "'host;reboot' is not a qemu CPU model" in refused.stderr, refused.stderr
        f.write_text(with_hv(c).replace("reboot_behavior: exit", "kernel_args: quiet"))
        spanning = await c.corral("apply", "-f", str(f))
        assert "kernel_args and initrd_path need kernel_path" in spanning.stderr, spanning.stderr
        assert engine.state.revision == revision

        # Ganeti's stock client: ModifyInstance(hvparams=...), refusals naming the key.
        require_debian(CLIENT_MODULE, "python3-ganeti-rapi")
        async with (
            rapi(c, RapiUsers.from_text(USERS)) as port,
            stock_client(tmp_path, port, "root", "rootpw") as gc,
        ):
            job = await gc.call("ModifyInstance", "web1", hvparams={"cpu_type": "default"})
            done = await gc.run_job(job)
            assert done["ops"][0]["OP_ID"] == "OP_INSTANCE_SET_PARAMS", done
            inst = await gc.call("GetInstance", "web1")
            assert inst["custom_hvparams"] == {
                "reboot_behavior": "exit",
                "nic_type": "paravirtual",
            }, inst
            assert inst["hvparams"]["nic_type"] == "paravirtual", inst
            assert inst["hvparams"]["usb_mouse"] == "tablet", inst
            wrong = await gc.try_call("ModifyInstance", "web1", hvparams={"boot_order": "floppy"})
            assert wrong["code"] == 400 and "boot_order" in wrong["error"], wrong
            unknown = await gc.try_call("ModifyInstance", "web1", hvparams={"vnc_tls": "true"})
            assert unknown["code"] == 400 and "vnc_tls" in unknown["error"], unknown
        assert engine.state.desired.instances[InstanceName("web1")].hv.cpu_type == ""
