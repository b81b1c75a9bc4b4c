"""Renaming an instance against real etcd and the simulated lab: refused while it
runs (nothing recorded, nothing touched on the nodes), then, stopped, renamed
through the native API and through Ganeti's stock RAPI client (`RenameInstance`).
Assertions look at the simulated nodes (LV names, DRBD resource files, the DRBD
pair still UpToDate on the same minor with the same data generation: no resync)
and at the VM qemu runs under the new name."""

from __future__ import annotations

from pathlib import Path

from events.ids import InstanceName
from orchestrator.rapi.users import RapiUsers
from simulators.fabric import Host
from tests.lab.faces.test_api import running_api, wait_job
from tests.lab.faces.test_rapi import CLIENT_MODULE, USERS, rapi, require_debian, stock_client
from tests.support.cluster.cluster_harness import Cluster, cluster
from tests.support.cluster.events import cluster_yaml

WEB1 = """  - name: web1
    memory: 256M
    vcpus: 1
    disks: [1G, 512M]
    primary: node1
  - name: db1
    memory: 256M
    vcpus: 1
    disks: [1G]
    primary: node1
"""


PAIR: list[str] = []  # web1's primary and secondary, once placed


def hosts_of(c: Cluster) -> list[Host]:
    return [c.lab.fabric.hosts[n] for n in PAIR]


def disks_on(host: Host, name: str) -> dict[str, tuple[str, int, int]]:
    """resource -> (disk state, minor, data generation) for `name`'s disks."""
    out = {}
    for res, copy in host.copies.items():
        if res.startswith(f"{name}-d") and copy.up:
            out[res] = (copy.disk, copy.config.hosts[host.name].minor, copy.current)
    return out


def assert_named(c: Cluster, name: str, old: str, before: dict[str, list[tuple[int, int]]]) -> None:
    for host in hosts_of(c):
        assert sorted(v for v in host.volumes if v.startswith(f"{name}-d")) == [
            f"{name}-d0",
            f"{name}-d1",
        ], host.volumes
        assert not [v for v in host.volumes if v.startswith(f"{old}-d")], host.volumes
        assert f"/etc/drbd.d/{name}-d0.res" in host.files
        assert f"/etc/drbd.d/{name}-d1.res" in host.files
        assert f"/etc/drbd.d/{old}-d0.res" not in host.files
        assert f"resource {name}-d0" in host.files[f"/etc/drbd.d/{name}-d0.res"].decode()
        disks = disks_on(host, name)
        assert [s for s, _, _ in disks.values()] == ["UpToDate", "UpToDate"], disks
        # same minors, same data generation: the pair reconnected without a resync
        assert [(m, g) for _, m, g in disks.values()] == before[host.name], disks


async def test_rename_round_trips_api_and_stock_rapi_client(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, WEB1))
        applied = await c.corral("apply", "-f", str(f), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr

        # Running: refused, naming why, nothing recorded.
        revision = engine.state.revision
        running = await c.corral("instance", "rename", "web1", "web2")
        assert running.returncode != 0 and "not stopped" in running.stderr, running.stderr
        assert engine.state.revision == revision
        bad = await c.corral("instance", "rename", "web1", "Web 2")
        assert bad.returncode != 0 and "new name" in bad.stderr, bad.stderr

        stopped = await c.corral("instance", "stop", "web1", "--wait")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        placement = engine.state.placements[InstanceName("web1")]
        PAIR[:] = [placement.primary, placement.secondary]
        before = {h.name: [(m, g) for _, m, g in disks_on(h, "web1").values()] for h in hosts_of(c)}

        async with running_api(state=lambda: engine.state, store=c.store) as api:
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/rename", body={"new_name": "db1"}
            )
            assert status == 422 and body["error"]["field"] == "new_name", body
            assert "an instance named db1 exists" in body["error"]["message"], body
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/rename", body={"new_name": "web2"}, who="operator"
            )
            assert status == 403, body
            status, body = await api.call(
                "POST", "/api/v1/instances/web1/rename", body={"new_name": "web2"}
            )
            assert status == 202, body
            job = await wait_job(api, body["job_id"])
            assert job["status"] == "success", job
        web2 = InstanceName("web2")
        assert InstanceName("web1") not in engine.state.desired.instances
        assert engine.state.desired.instances[web2].name == web2
        assert engine.state.placements[web2].disks == placement.disks
        await c.wait_for(
            "web2's disks on both nodes",
            lambda: all(len(disks_on(h, "web2")) == 2 for h in hosts_of(c)),
        )
        assert_named(c, "web2", "web1", before)

        # Ganeti's stock client renames it again; then it starts under its new name.
        require_debian(CLIENT_MODULE, "python3-ganeti-rapi")
        async with (
            rapi(c, RapiUsers.from_text(USERS)) as port,
            stock_client(tmp_path, port, "root", "rootpw") as gc,
        ):
            taken = await gc.try_call("RenameInstance", "web2", "db1")
            assert taken["code"] == 400 and "db1" in taken["error"], taken
            dns = await gc.try_call("RenameInstance", "web2", "web3", ip_check=True)
            assert dns["code"] == 501 and "ip_check" in dns["error"], dns
            done = await gc.run_job(await gc.call("RenameInstance", "web2", "web3"))
            assert done["ops"][0]["OP_ID"] == "OP_INSTANCE_RENAME", done
            assert (await gc.call("GetInstance", "web3"))["name"] == "web3"
            missing = await gc.try_call("GetInstance", "web2")
            assert missing["code"] == 404, missing
        assert_named(c, "web3", "web2", before)

        started = await c.corral("instance", "start", "web3", "--wait")
        assert started.returncode == 0, started.stdout + started.stderr
        primary = c.lab.fabric.hosts[placement.primary]
        await c.wait_for("web3 runs", lambda: "web3" in primary.vms)
        vm = primary.vms["web3"]
        minors = [m for m, _ in before[placement.primary]]
        assert vm.drives == [f"/dev/drbd{m}" for m in minors], vm.drives
        assert not any(
            v.name.startswith("web1") or v.name.startswith("web2") for v in primary.vms.values()
        )
        history = await c.corral("events", "--object", "web3", "--type", "instance.renamed")
        assert "web2" in history.stdout, history.stdout
