"""Changes after creation against real etcd and the simulated lab: a memory and
vCPU change round-trips through the desired-state file (`corral plan/apply`), the
native API and Ganeti's stock RAPI client (`ModifyInstance`); one that does not fit
its nodes (the issue's 1G -> 2G on a node with little free memory) is refused with
the reason and the N+1 effect and changes nothing, unless forced, which is
recorded. Assertions look at the desired state, the recorded events and the VMs
the simulated hosts run."""

from __future__ import annotations

import json
from pathlib import Path

from events.ids import InstanceName
from orchestrator.rapi.users import RapiUsers
from simulators.lab import HostConfig
from tests.lab.faces.test_api import running_api, wait_job
from tests.lab.faces.test_rapi import CLIENT_MODULE, USERS, rapi, require_debian, stock_client
from tests.support.cluster.cluster_harness import Cluster, cluster
from tests.support.cluster.events import cluster_yaml

WEB1 = """  - name: web1
    memory: {memory}
    vcpus: {vcpus}
    disks: [2G]
    primary: node1
    tags: [owner:alice]
  - name: db1
    memory: 512M
    vcpus: 1
    disks: [1G]
    primary: node1
"""


def vm_memory(c: Cluster, name: str) -> list[tuple[str, int, int]]:
    """(node, MiB, vcpus) of every simulated qemu running `name`."""
    return [
        (host.name, vm.memory_mib, vm.vcpus)
        for host in c.lab.fabric.hosts.values()
        for vm in host.vms.values()
        if vm.name == name and vm.status == "running"
    ]


async def test_memory_and_vcpus_round_trip_file_api_and_rapi(tmp_path: Path) -> None:
    # Two nodes of 2.5G with 512M kept by the host: web1 (1G) and db1 (512M) leave
    # 512M free on their primary, as in the issue.
    hosts = [HostConfig(name=n, memory_mib=2560) for n in ("node1", "node2")]
    async with cluster(tmp_path, hosts=hosts) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, WEB1.format(memory="1G", vcpus=1)))
        applied = await c.corral("apply", "-f", str(f), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        primary = "node1"
        assert vm_memory(c, "web1") == [(primary, 1024, 1)]
        web1 = InstanceName("web1")

        # 1G -> 2G in the file: plan shows the in-place change and why it cannot be.
        f.write_text(cluster_yaml(c, WEB1.format(memory="2G", vcpus=1)))
        plan = await c.corral("plan", "-f", str(f))
        assert plan.returncode == 1, plan.stdout + plan.stderr
        assert "memory: 1G -> 2G" in plan.stdout, plan.stdout
        assert f"memory: 2G does not fit on primary {primary}" in plan.stdout, plan.stdout
        assert "N+1" in plan.stdout and "restart needed" in plan.stdout, plan.stdout
        revision = engine.state.revision
        refused = await c.corral("apply", "-f", str(f))
        assert refused.returncode == 1 and "nothing was recorded" in refused.stderr
        assert engine.state.revision == revision
        assert engine.state.desired.instances[web1].memory_mib == 1024

        # Forced: recorded, with what it was forced past; the VM keeps 1G until a restart.
        forced = await c.corral("apply", "-f", str(f), "--force", "--wait")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert engine.state.desired.instances[web1].memory_mib == 2048
        history = await c.corral("events", "--object", "web1", "--type", "instance.", "--json")
        reasons = [e["reason"] for e in json.loads(history.stdout)]
        assert any("forced past: memory: 2G does not fit" in r for r in reasons), reasons
        assert [m for _, m, _ in vm_memory(c, "web1")] == [1024]

        # The native API: 2G again refused (422 naming the field, nothing recorded);
        # back to 1G and 2 vcpus accepted, as a job.
        async with running_api(state=lambda: engine.state, store=c.store) as api:
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/modify", body={"memory_mib": 1536}
            )
            assert status == 202, body  # a decrease from the forced 2G always fits
            assert (await wait_job(api, body["job_id"]))["status"] == "success"
            revision = engine.state.revision
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/modify", body={"memory_mib": 3072}
            )
            assert status == 422 and body["error"]["field"] == "memory", body
            assert "N+1" in body["error"]["message"], body
            assert engine.state.revision == revision
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/modify", body={"vcpus": 0}
            )
            assert status == 422 and "vcpus" in json.dumps(body), body
            status, body = await api.call(
                "POST",
                "/api/v1/instances/web1/modify",
                body={"memory_mib": 1024, "vcpus": 2},
                who="operator",
            )
            assert status == 403, body
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/modify", body={"memory_mib": 1024, "vcpus": 2}
            )
            assert status == 202, body
            job = await wait_job(api, body["job_id"])
            assert job["status"] == "success", job
            assert engine.state.revision > revision

            # A project owner's token (scoped to owner:alice) powers its own VM only,
            # and may not resize it (that changes the desired state).
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/reboot", who="alice", body={}
            )
            assert status == 202, body
            assert (await wait_job(api, body["job_id"]))["status"] == "success"
            status, _ = await api.call("POST", "/api/v1/instances/db1/stop", who="alice", body={})
            assert status == 404
            status, _ = await api.call(
                "POST", "/api/v1/instances/web1/modify", who="alice", body={"vcpus": 1}
            )
            assert status == 403
        spec = engine.state.desired.instances[web1]
        assert (spec.memory_mib, spec.vcpus) == (1024, 2)

        # Ganeti's stock client: ModifyInstance with beparams, refusals as Ganeti's
        # 400/501, and the job Ganeti's way.
        require_debian(CLIENT_MODULE, "python3-ganeti-rapi")
        users = RapiUsers.from_text(USERS)
        async with (
            rapi(c, users) as port,
            stock_client(tmp_path, port, "root", "rootpw") as gc,
        ):
            job = await gc.call("ModifyInstance", "web1", beparams={"maxmem": 1280, "vcpus": 1})
            done = await gc.run_job(job)
            assert done["ops"][0]["OP_ID"] == "OP_INSTANCE_SET_PARAMS", done
            inst = await gc.call("GetInstance", "web1")
            assert inst["beparams"]["maxmem"] == 1280 and inst["beparams"]["vcpus"] == 1
            too_big = await gc.try_call("ModifyInstance", "web1", beparams={"maxmem": 4096})
            assert too_big["code"] == 400 and "memory" in too_big["error"], too_big
            nics = await gc.try_call("ModifyInstance", "web1", os_name="debian")
            assert nics["code"] == 501 and "os_name" in nics["error"], nics
        async with rapi(c, users) as port, stock_client(tmp_path, port, "ops", "opspw") as gc:
            denied = await gc.try_call("ModifyInstance", "web1", beparams={"maxmem": 512})
            assert denied["code"] == 403, denied
        async with rapi(c, users) as port, stock_client(tmp_path, port, "alice", "alicepw") as gc:
            await gc.run_job(await gc.call("RebootInstance", "web1"))
            other = await gc.try_call("ShutdownInstance", "db1")
            assert other["code"] == 404, other
        await c.wait_for(
            "modify jobs done",
            lambda: all(j.status == "success" for j in engine.state.jobs.values()),
        )
        assert engine.state.desired.instances[web1].memory_mib == 1280

        # A restart brings the VM to its recorded size.
        rebooted = await c.corral("instance", "reboot", "web1", "--wait")
        assert rebooted.returncode == 0, rebooted.stdout + rebooted.stderr
        await c.wait_for("1280M, 1 vcpu", lambda: vm_memory(c, "web1") == [(primary, 1280, 1)])

        # The file written with what the API and RAPI recorded: nothing to change.
        f.write_text(cluster_yaml(c, WEB1.format(memory="1280M", vcpus=1)))
        same = await c.corral("plan", "-f", str(f))
        assert same.returncode == 0 and "No changes" in same.stdout, same.stdout
