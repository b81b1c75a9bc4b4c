"""Devices taken out of instances after creation, against real etcd and the simulated
lab over SSH: the last disk of a stopped instance removed through the CLI, the
native API, Ganeti's stock RAPI client and the desired-state file (its DRBD resource,
resource file and LV gone from both nodes, the record one disk shorter), also when
the orchestrator restarts in the middle; refusals (running, not the last disk, the
only disk) change nothing; NICs removed and changed (MACs kept for the NICs that
stay, in effect at the next start), and a bridge the nodes lack refused, naming the
field."""

from __future__ import annotations

from pathlib import Path

from events.ids import InstanceName, JobId
from events.model import instance_key
from events.state import ClusterState, JobState
from orchestrator.rapi.users import RapiUsers
from simulators.fabric import CommandFault, Host
from tests.lab.faces.test_api import running_api, wait_job
from tests.lab.faces.test_rapi import CLIENT_MODULE, USERS, rapi, require_debian, stock_client
from tests.support.cluster.cluster_harness import Cluster, cluster
from tests.support.cluster.events import cluster_yaml

DB1 = """  - name: db1
    memory: 256M
    vcpus: 1
    disks: [{disks}]
    state: {state}
"""

M0, M1, M2 = "aa:00:00:00:02:00", "aa:00:00:00:02:01", "aa:00:00:00:02:02"
WEB1 = f"""  - name: web1
    memory: 256M
    vcpus: 1
    disks: [1G]
    nics:
      - {{link: br0, mac: '{M0}'}}
      - {{link: br0, mac: '{M1}'}}
      - {{link: br0, mac: '{M2}'}}
"""


def hosts(c: Cluster, state: ClusterState, name: str) -> list[Host]:
    p = state.placements[InstanceName(name)]
    return [c.lab.fabric.hosts[n] for n in (p.primary, p.secondary)]


def on_nodes(host: Host, resource: str) -> list[str]:
    """What `host` still holds of `resource`: its LV, DRBD copy, resource file."""
    held = []
    if resource in host.volumes:
        held.append("LV")
    if resource in host.copies and host.copies[resource].up:
        held.append("DRBD")
    if f"/etc/drbd.d/{resource}.res" in host.files:
        held.append("file")
    return held


def jobs_of(state: ClusterState, kind: str) -> list[JobState]:
    return sorted((j for j in state.jobs.values() if j.kind == kind), key=lambda j: j.submitted_at)


def recorded(state: ClusterState, name: str) -> tuple[int, int, object, object]:
    """What a refused request must leave as it was: the jobs, the instance's
    version, spec and placement (the revision itself moves with the probes)."""
    key = InstanceName(name)
    return (
        len(state.jobs),
        state.versions.get(instance_key(key), 0),
        state.desired.instances[key],
        state.placements.get(key),
    )


def sizes(state: ClusterState, name: str) -> list[int]:
    return [d.size_mib for d in state.desired.instances[InstanceName(name)].disks]


async def test_last_disk_removed_on_both_nodes_and_refusals_change_nothing(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, DB1.format(disks="1G, 512M, 256M", state="running")))
        applied = await c.corral("apply", "-f", str(f), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        pair = hosts(c, engine.state, "db1")
        assert all(on_nodes(h, "db1-d2") == ["LV", "DRBD", "file"] for h in pair)

        # Refused while it runs, nothing recorded, nothing touched on the nodes.
        before = recorded(engine.state, "db1")
        running = await c.corral("instance", "remove-disk", "db1", "--yes")
        assert running.returncode != 0 and "must be stopped" in running.stderr, running.stderr
        assert recorded(engine.state, "db1") == before
        stopped = await c.corral("instance", "stop", "db1", "--wait")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr

        # Not the last disk, and (through the API) not the only one: refused alike.
        before = recorded(engine.state, "db1")
        middle = await c.corral("instance", "remove-disk", "db1", "--disk", "1", "--yes")
        assert middle.returncode != 0 and "only the last disk" in middle.stderr, middle.stderr
        async with running_api(state=lambda: engine.state, store=c.store) as api:
            status, body = await api.call(
                "POST", "/api/v1/instances/db1/remove-disk", body={"disk": 0}
            )
            assert status == 422 and body["error"]["field"] == "disk", body
            assert "only the last disk (2)" in body["error"]["message"], body
            status, body = await api.call(
                "POST", "/api/v1/instances/db1/remove-disk", body={"disk": 9}
            )
            assert status == 422 and body["error"]["field"] == "disk", body
            assert recorded(engine.state, "db1") == before
            assert all(on_nodes(h, "db1-d2") == ["LV", "DRBD", "file"] for h in pair)

            # The last disk, through the native API.
            status, body = await api.call("POST", "/api/v1/instances/db1/remove-disk", body={})
            assert status == 202, body
            job = await wait_job(api, body["job_id"])
            assert job["status"] == "success", job
        assert sizes(engine.state, "db1") == [1024, 512]
        assert [d.index for d in engine.state.placements[InstanceName("db1")].disks] == [0, 1]
        for host in pair:
            assert on_nodes(host, "db1-d2") == [], host.name
            assert on_nodes(host, "db1-d1") == ["LV", "DRBD", "file"], host.name
        history = await c.corral("events", "--object", "db1", "--type", "instance.updated")
        assert "disk 2 (db1-d2) removed from db1" in history.stdout, history.stdout

        # Ganeti's stock client: ModifyInstance(disks=[("remove", {})]) removes the
        # last one; its only disk it cannot.
        require_debian(CLIENT_MODULE, "python3-ganeti-rapi")
        async with (
            rapi(c, RapiUsers.from_text(USERS)) as port,
            stock_client(tmp_path, port, "root", "rootpw") as gc,
        ):
            done = await gc.run_job(await gc.call("ModifyInstance", "db1", disks=[["remove", {}]]))
            assert done["ops"][0]["OP_ID"] == "OP_INSTANCE_SET_PARAMS", done
            before = recorded(engine.state, "db1")
            only = await gc.try_call("ModifyInstance", "db1", disks=[["remove", 0, {}]])
            assert only["code"] == 400 and "only disk" in only["error"], only
            assert recorded(engine.state, "db1") == before
        assert sizes(engine.state, "db1") == [1024]
        for host in pair:
            assert on_nodes(host, "db1-d1") == [], host.name
            assert on_nodes(host, "db1-d0") == ["LV", "DRBD", "file"], host.name

        # It starts with the disk it has left.
        started = await c.corral("instance", "start", "db1", "--wait")
        assert started.returncode == 0, started.stdout + started.stderr
        vm = c.lab.fabric.hosts[engine.state.placements[InstanceName("db1")].primary].vms["db1"]
        assert len(vm.drives) == 1, vm.drives


async def test_removal_in_the_file_is_destructive_and_resumes_after_a_restart(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, DB1.format(disks="1G, 512M", state="running")))
        applied = await c.corral("apply", "-f", str(f), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        pair = hosts(c, engine.state, "db1")

        # Dropped while the file keeps it running: refused.
        f.write_text(cluster_yaml(c, DB1.format(disks="1G", state="running")))
        plan = await c.corral("plan", "-f", str(f), "--allow-destroy")
        assert plan.returncode == 1, plan.stdout + plan.stderr
        assert "disk 1 can be removed only while it is stopped" in plan.stdout, plan.stdout

        # Stopped in the same file: destructive, so it needs --allow-destroy.
        f.write_text(cluster_yaml(c, DB1.format(disks="1G", state="stopped")))
        plan = await c.corral("plan", "-f", str(f))
        assert "destructive: disk 1 (512M) removed" in plan.stdout, plan.stdout
        assert "pass --allow-destroy" in plan.stdout, plan.stdout
        before = recorded(engine.state, "db1")
        refused = await c.corral("apply", "-f", str(f))
        assert refused.returncode != 0 and "allow-destroy" in refused.stderr, refused.stderr
        assert recorded(engine.state, "db1") == before

        # The secondary's lvremove fails: the removal is recorded and the primary
        # cleared, then the orchestrator stops in the middle of the job.
        secondary = pair[1].name
        c.lab.add_fault(secondary, CommandFault(match="lvremove", kind="fail"))
        applied = await c.corral("apply", "-f", str(f), "--allow-destroy")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        await c.wait_for(
            "a removal attempt failed on the secondary",
            lambda: any(
                "not yet removed" in line
                for j in jobs_of(engine.state, "instance.remove-disk")
                for _, line in j.log
            ),
            timeout=60,
        )
        [job] = jobs_of(engine.state, "instance.remove-disk")
        assert sizes(engine.state, "db1") == [1024]  # recorded before any node command
        assert on_nodes(pair[0], "db1-d1") == []
        assert on_nodes(pair[1], "db1-d1") == ["LV"]
        await c.stop_engine()

        c.lab.fabric.command_faults[secondary].clear()
        engine = await c.start_engine()
        await c.wait_for(
            "the resumed job ends",
            lambda: engine.state.jobs[JobId(job.job_id)].status in ("success", "error"),
            timeout=90,
        )
        ended = engine.state.jobs[JobId(job.job_id)]
        assert ended.status == "success", (ended.error, ended.log)
        assert any("resumed" in line for _, line in ended.log), ended.log
        assert sizes(engine.state, "db1") == [1024]
        assert len(engine.state.placements[InstanceName("db1")].disks) == 1
        for host in pair:
            assert on_nodes(host, "db1-d1") == [], host.name
            assert on_nodes(host, "db1-d0") == ["LV", "DRBD", "file"], host.name
        again = await c.corral("plan", "-f", str(f))
        assert again.returncode == 0, again.stdout + again.stderr


def macs(vm_argv: list[str]) -> list[str]:
    return [a.split("mac=")[1].split(",")[0] for a in vm_argv if "mac=" in a]


async def test_nics_removed_and_changed_keep_macs_and_need_the_bridge(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, WEB1))
        applied = await c.corral("apply", "-f", str(f), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        name = InstanceName("web1")
        primary = c.lab.fabric.hosts[engine.state.placements[name].primary]
        assert macs(primary.vms["web1"].argv) == [M0, M1, M2]

        def nic_macs() -> list[str | None]:
            return [n.mac for n in engine.state.desired.instances[name].nics]

        require_debian(CLIENT_MODULE, "python3-ganeti-rapi")
        async with (
            rapi(c, RapiUsers.from_text(USERS)) as port,
            stock_client(tmp_path, port, "root", "rootpw") as gc,
        ):
            before = recorded(engine.state, "web1")
            for nics, code, words in (
                ([["modify", 5, {"link": "br0"}]], 400, "nics[5]"),
                ([["modify", 0, {"link": "br9"}]], 400, "nics[0].link"),
                ([["modify", 0, {"bogus": "x"}]], 400, "nics[0].bogus"),
                ([["remove", 1, {"link": "br0"}]], 400, "nics[0]"),
                ([["modify", 0, {"vlan": "5"}]], 501, "nics[0].vlan"),
            ):
                got = await gc.try_call("ModifyInstance", "web1", nics=nics)
                assert got["code"] == code and words in got["error"], (nics, got)
            assert recorded(engine.state, "web1") == before

            done = await gc.run_job(
                await gc.call("ModifyInstance", "web1", nics=[["remove", 1, {}]])
            )
            assert done["ops"][0]["OP_ID"] == "OP_INSTANCE_SET_PARAMS", done
        assert nic_macs() == [M0, M2]
        # In effect at the next start: the running VM keeps its three until then.
        assert macs(primary.vms["web1"].argv) == [M0, M1, M2]
        rebooted = await c.corral("instance", "reboot", "web1", "--wait")
        assert rebooted.returncode == 0, rebooted.stdout + rebooted.stderr
        await c.wait_for(
            "web1 restarted with two NICs",
            lambda: "web1" in primary.vms and macs(primary.vms["web1"].argv) == [M0, M2],
        )

        async with running_api(state=lambda: engine.state, store=c.store) as api:
            before = recorded(engine.state, "web1")
            status, body = await api.call(
                "POST",
                "/api/v1/instances/web1/nics",
                body={"nics": [{"link": "br0"}, {"link": "br9"}]},
            )
            assert status == 422 and body["error"]["field"] == "nics[1].link", body
            assert "no bridge 'br9'" in body["error"]["message"], body
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/nics", body={"nics": [{"link": "br 0"}]}
            )
            assert status == 422 and body["error"]["field"] == "nics[0].link", body
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/nics", body={"nics": [{"mac": M0}, {"mac": M0}]}
            )
            assert status == 422 and body["error"]["field"] == "nics[1].mac", body
            assert recorded(engine.state, "web1") == before
            # The whole list given: the NIC that stays is named by its MAC.
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/nics", body={"nics": [{"mac": M2}]}
            )
            assert status == 202, body
            job = await wait_job(api, body["job_id"])
            assert job["status"] == "success", job
        assert nic_macs() == [M2]

        # The CLI: the last NIC removed.
        removed = await c.corral("instance", "nics", "web1", "--remove", "0", "--wait")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert nic_macs() == []
        bad = await c.corral("instance", "nics", "web1", "--remove", "0")
        assert bad.returncode != 0 and "nics[0]" in bad.stderr, bad.stderr

        # The desired-state file: a bridge the instance's nodes lack is refused,
        # naming the file and the field.
        f.write_text(cluster_yaml(c, WEB1.replace(f"link: br0, mac: '{M2}'", "link: br9")))
        before = recorded(engine.state, "web1")
        plan = await c.corral("plan", "-f", str(f))
        assert plan.returncode == 1, plan.stdout + plan.stderr
        assert str(f) in plan.stdout and "nics[2].link" in plan.stdout, plan.stdout
        assert "no bridge 'br9'" in plan.stdout, plan.stdout
        refused = await c.corral("apply", "-f", str(f))
        assert refused.returncode != 0 and "br9" in refused.stderr, refused.stderr
        assert recorded(engine.state, "web1") == before
