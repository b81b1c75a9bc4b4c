"""Ganeti OS definitions against real etcd and the simulated lab: `os:
debootstrap+default` names a catalogue entry of kind ganeti-os; creating the
instance runs the definition's `create` script found on the primary (Ganeti's
search path) with the OS API's environment, writing the new DRBD device, before
the VM's first start; a reinstall runs it with INSTANCE_REINSTALL=1; a rename runs
its `rename` script with OLD_INSTANCE_NAME. A script that fails, an unknown
variant and a missing definition are each recorded as install_failed naming the
definition and the node (the exit code and the log's last lines for a script),
with no VM started and, for the last two, no script run. A RAPI create whose
os_type names the definition runs it too, its osparams over the catalogue's, and
a RAPI reinstall's osparams reach the create script the same way; RAPI's OS list
holds the catalogue's entries.
Assertions look at what the simulated hosts recorded (the scripts run, the
environment each got, the device written, the log files) and at the recorded
events."""

from __future__ import annotations

import json
from pathlib import Path

from events.ids import InstanceName
from orchestrator.rapi.users import RapiUsers
from simulators.fabric import Host, OsRun
from simulators.lab import HostConfig
from tests.lab.faces.test_rapi import CLIENT_MODULE, USERS, rapi, require_debian, stock_client
from tests.support.cluster.cluster_harness import Cluster, cluster
from tests.support.cluster.events import cluster_yaml

OS_DIR = "/usr/share/ganeti/os/debootstrap"  # where Debian's package puts it


def install_definition(host: Host, *, create: str = "echo creating the guest\nexit 0\n") -> None:
    files = {
        "ganeti_api_version": "20\n15\n",
        "variants.list": "# the variants\ndefault\nminimal\n",
        "parameters.list": "dhcp Whether to use DHCP\n",
        "create": create,
        "rename": "echo renaming\nexit 0\n",
        "export": "exit 0\n",
        "import": "exit 0\n",
        "verify": "exit 0\n",
    }
    for name, text in files.items():
        host.files[f"{OS_DIR}/{name}"] = text.encode()


CATALOGUE = """images:
  - name: debootstrap+default
    kind: ganeti-os
    parameters: {dhcp: "no"}
  - name: debootstrap+nope
    kind: ganeti-os
  - name: missing+default
    kind: ganeti-os
"""


# Catalogue entries no instance uses (RAPI's /2/os lists them all the same).
UNUSED = f"""  - name: lenny
    kind: ganeti-os
  - name: cirros
    source: /var/lib/corral/images/cirros.raw
    sha256: "{"0" * 64}"
"""


def instance(name: str, os_name: str, *, state: str = "running", extra: str = "") -> str:
    return (
        f"""  - name: {name}
    memory: 256M
    disks: [1G, 512M]
    primary: node1
    os: {os_name}
    state: {state}
    nics: [{{link: br0, ip: 10.9.0.5}}]
"""
        + extra
    )


def minor_of(host: Host, resource: str) -> int:
    return host.copies[resource].config.hosts[host.name].minor


def runs(host: Host, script: str, instance: str) -> list[OsRun]:
    return [
        r
        for r in host.os_runs
        if r.script == f"{OS_DIR}/{script}" and r.env.get("INSTANCE_NAME") == instance
    ]


def running(c: Cluster, name: str) -> bool:
    return any(
        vm.name == name and vm.status == "running"
        for host in c.lab.fabric.hosts.values()
        for vm in host.vms.values()
    )


async def test_create_reinstall_and_rename_run_the_definitions_scripts(tmp_path: Path) -> None:
    hosts = [HostConfig(name=n, memory_mib=4096) for n in ("node1", "node2")]
    async with cluster(tmp_path, hosts=hosts) as c:
        engine = await c.start_engine()
        node1 = c.lab.fabric.hosts["node1"]
        for host in c.lab.fabric.hosts.values():
            install_definition(host)
        f = tmp_path / "cluster.yaml"
        hv = "    hvparams: {nic_type: e1000}\n"
        f.write_text(cluster_yaml(c, instance("web1", "debootstrap+default", extra=hv)) + CATALOGUE)
        applied = await c.corral("apply", "-f", str(f), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "web1: OS definition debootstrap+default installed on node1" in applied.stdout

        (create,) = runs(node1, "create", "web1")
        spec = engine.state.desired.instances[InstanceName("web1")]
        d0, d1 = minor_of(node1, "web1-d0"), minor_of(node1, "web1-d1")
        assert create.argv == (f"{OS_DIR}/create",)
        assert create.env == {
            "OS_API_VERSION": "20",
            "OS_NAME": "debootstrap",
            "OS_VARIANT": "default",
            "PATH": "/sbin:/bin:/usr/sbin:/usr/bin",
            "INSTANCE_NAME": "web1",
            "INSTANCE_OS": "debootstrap+default",
            "INSTANCE_PRIMARY_NODE": "node1",
            "INSTANCE_SECONDARY_NODES": "node2",
            "HYPERVISOR": "kvm",
            "DEBUG_LEVEL": "0",
            "DISK_COUNT": "2",
            "DISK_0_PATH": f"/dev/drbd{d0}",
            "DISK_0_ACCESS": "rw",
            "DISK_0_SIZE": "1024",
            "DISK_0_BACKEND_TYPE": "block",
            "DISK_1_PATH": f"/dev/drbd{d1}",
            "DISK_1_ACCESS": "rw",
            "DISK_1_SIZE": "512",
            "DISK_1_BACKEND_TYPE": "block",
            "NIC_COUNT": "1",
            "NIC_0_MAC": spec.nics[0].mac,
            "NIC_0_IP": "10.9.0.5",
            "NIC_0_MODE": "bridged",
            "NIC_0_LINK": "br0",
            "NIC_0_BRIDGE": "br0",
            "INSTANCE_BE_maxmem": "256",
            "INSTANCE_BE_minmem": "256",
            "INSTANCE_BE_vcpus": "1",
            "INSTANCE_HV_nic_type": "e1000",
            "NIC_0_FRONTEND_TYPE": "e1000",
            "OSP_DHCP": "no",
        }, create.env
        assert node1.images[f"/dev/drbd{d0}"] == "os:debootstrap+default:web1"
        assert not c.lab.fabric.hosts["node2"].os_runs  # the secondary only syncs
        logs = [
            p
            for p in node1.files
            if p.startswith("/var/log/corral/os/add-debootstrap+default-web1-")
        ]
        assert len(logs) == 1 and node1.files[logs[0]] == b"creating the guest\n", logs
        assert running(c, "web1")
        assert not [
            p for p in node1.files if p.startswith("/var/lib/corral/seed/")
        ]  # no seed asked
        assert engine.state.installs[InstanceName("web1")].done

        # A reinstall: stopped, the create script again with INSTANCE_REINSTALL=1, started.
        again = await c.corral("instance", "reinstall", "web1", "--yes", "--wait")
        assert again.returncode == 0, again.stdout + again.stderr
        first, second = runs(node1, "create", "web1")
        assert "INSTANCE_REINSTALL" not in first.env and second.env["INSTANCE_REINSTALL"] == "1"
        assert running(c, "web1")
        # Another variant of the declared definition (the node checks it).
        other = await c.corral(
            "instance", "reinstall", "web1", "--os", "debootstrap+minimal", "--yes", "--wait"
        )
        assert other.returncode == 0, other.stdout + other.stderr
        third = runs(node1, "create", "web1")[-1]
        assert (third.env["INSTANCE_OS"], third.env["OS_VARIANT"]) == (
            "debootstrap+minimal",
            "minimal",
        )
        assert third.env["OSP_DHCP"] == "no"  # the definition's parameters in the catalogue
        assert node1.images[f"/dev/drbd{d0}"] == "os:debootstrap+minimal:web1"

        # A rename: the rename script on the primary, with the new disks' names.
        stopped = await c.corral("instance", "stop", "web1", "--wait")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        renamed = await c.corral("instance", "rename", "web1", "web2", "--wait")
        assert renamed.returncode == 0, renamed.stdout + renamed.stderr
        (rename,) = runs(node1, "rename", "web2")
        assert rename.env["OLD_INSTANCE_NAME"] == "web1"
        assert rename.env["INSTANCE_OS"] == "debootstrap+minimal"
        assert rename.env["DISK_0_PATH"] == f"/dev/drbd{minor_of(node1, 'web2-d0')}"
        assert [
            p
            for p in node1.files
            if p.startswith("/var/log/corral/os/rename-debootstrap+minimal-web1-web2-")
        ]
        assert InstanceName("web2") in engine.state.desired.instances
        # the disks went back to Secondary: the stopped instance holds no Primary
        assert all(node1.copies[r].role == "Secondary" for r in ("web2-d0", "web2-d1"))

        # A rename script that fails: said in the job, the rename done all the same
        # (as Ganeti: "Could not run OS rename script").
        node1.files[f"{OS_DIR}/rename"] = b"echo hostname file missing\nexit 4\n"
        again = await c.corral("instance", "rename", "web2", "web3", "--wait")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "WARNING: the OS rename script of web3 did not run through" in again.stdout
        assert "exited 4" in again.stdout and "hostname file missing" in again.stdout
        assert InstanceName("web3") in engine.state.desired.instances
        assert all(node1.copies[r].role == "Secondary" for r in ("web3-d0", "web3-d1"))


async def test_failures_are_recorded_before_or_after_the_script_and_nothing_starts(
    tmp_path: Path,
) -> None:
    hosts = [HostConfig(name=n, memory_mib=4096) for n in ("node1", "node2")]
    async with cluster(tmp_path, hosts=hosts) as c:
        engine = await c.start_engine()
        node1 = c.lab.fabric.hosts["node1"]
        for host in c.lab.fabric.hosts.values():
            install_definition(host, create="echo mkfs: no space left\necho giving up\nexit 3\n")
        f = tmp_path / "cluster.yaml"
        f.write_text(
            cluster_yaml(
                c,
                instance("web1", "debootstrap+default")
                + instance("web2", "debootstrap+nope")
                + instance("web3", "missing+default", state="stopped"),
            )
            + CATALOGUE
            + UNUSED
        )
        applied = await c.corral("apply", "-f", str(f), "--wait", "--timeout", "60")
        assert applied.returncode == 1, applied.stdout + applied.stderr
        out = applied.stdout
        assert "web1: OS definition debootstrap+default not installed on node1" in out, out
        failed = engine.state.installs[InstanceName("web1")].error
        assert failed.startswith("on node1: run OS definition debootstrap+default create"), failed
        assert "exited 3" in failed and "mkfs: no space left\ngiving up" in failed, failed
        assert "(log: /var/log/corral/os/add-debootstrap+default-web1-" in failed, failed
        nope = engine.state.installs[InstanceName("web2")].error
        assert "has no variant 'nope'; its variants.list holds: default, minimal" in nope, nope
        missing = engine.state.installs[InstanceName("web3")].error
        assert "no OS definition 'missing' on this node" in missing, missing
        assert "/usr/share/ganeti/os" in missing and "/srv/ganeti/os" in missing, missing
        # only web1's scripts ran (verify of its parameters, then create); nothing
        # was written; no VM started
        assert [(r.argv, r.env["INSTANCE_NAME"]) for r in node1.os_runs] == [
            ((f"{OS_DIR}/verify", "parameters"), "web1"),
            ((f"{OS_DIR}/create",), "web1"),
        ]
        assert not node1.images
        assert not running(c, "web1") and not running(c, "web2")
        history = await c.corral("events", "--object", "web1", "--type", "instance.", "--json")
        events = json.loads(history.stdout)
        failures = [e for e in events if e["type"] == "instance.install_failed"]
        assert len(failures) == 1 and failures[0]["node"] == "node1", failures
        assert failures[0]["image"] == "debootstrap+default", failures

        # Fixed on the node: a RAPI create naming the definition runs it.
        require_debian(CLIENT_MODULE, "python3-ganeti-rapi")
        for host in c.lab.fabric.hosts.values():
            install_definition(host)
        async with (
            rapi(c, RapiUsers.from_text(USERS)) as port,
            stock_client(tmp_path, port, "root", "rootpw") as gc,
        ):
            bad = await gc.try_call(
                "CreateInstance", "create", "web5", "drbd", [{"size": 1024}], [],
                os="debootstrap+minimal", pnode="node1", snode="node2",
                osparams={"Root Size": "8"},
            )  # fmt: skip
            assert bad["code"] == 400 and "parameter name 'Root Size'" in bad["error"], bad
            created = await gc.call(
                "CreateInstance", "create", "web4", "drbd", [{"size": 1024}], [],
                os="debootstrap+minimal", pnode="node1", snode="node2",
                beparams={"maxmem": 256}, osparams={"dhcp": "yes"},
            )  # fmt: skip
            done = await gc.run_job(created)
            assert done["status"] == "success", done
            (create,) = runs(node1, "create", "web4")
            assert create.env["OS_VARIANT"] == "minimal" and create.env["NIC_COUNT"] == "0"
            assert create.env["OSP_DHCP"] == "yes"  # the request's over the catalogue's "no"
            web4_d0 = f"/dev/drbd{minor_of(node1, 'web4-d0')}"
            assert node1.images[web4_d0] == "os:debootstrap+minimal:web4"
            # What a create may name: the catalogue's entries as declared (a plain
            # NAME definition too), "none", and the variant web4 uses.
            assert await gc.call("GetOperatingSystems") == [
                "cirros",
                "debootstrap+default",
                "debootstrap+minimal",
                "debootstrap+nope",
                "lenny",
                "missing+default",
                "none",
            ]

            # A reinstall's osparams: a bad name is refused, nothing recorded ...
            before = engine.state.desired.instances[InstanceName("web4")]
            bad = await gc.try_call(
                "ReinstallInstance", "web4", os="debootstrap+default", osparams={"Root Size": "8"}
            )
            assert bad["code"] == 400 and "parameter name 'Root Size'" in bad["error"], bad
            assert engine.state.desired.instances[InstanceName("web4")] == before
            assert len(runs(node1, "create", "web4")) == 1
            # ... good ones go over the catalogue entry's for the create script.
            done = await gc.run_job(
                await gc.call(
                    "ReinstallInstance",
                    "web4",
                    os="debootstrap+default",
                    osparams={"dhcp": "maybe"},
                )
            )
            assert done["status"] == "success", done
            _, again = runs(node1, "create", "web4")
            assert again.env["INSTANCE_REINSTALL"] == "1", again.env
            assert (again.env["INSTANCE_OS"], again.env["OSP_DHCP"]) == (
                "debootstrap+default",
                "maybe",
            ), again.env
            await c.wait_for("web4 running again", lambda: running(c, "web4"))
        # written again by the reinstall's definition
        assert node1.images[web4_d0] == "os:debootstrap+default:web4"
