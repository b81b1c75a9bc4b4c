"""The everyday interface as a user runs it: a desired-state file, `corral plan`,
`corral apply --wait`, edits, removal, imperative commands and the drift `plan`
then shows, `status`, `events` (filters and `--at`), `cluster verify`, `audit
verify`, and bad input that changes nothing. Every command is the real `corral`
process against a real etcd, with the reactors driving simulated nodes over SSH.
Assertions look at the simulated hosts and at the folded state."""

from __future__ import annotations

import json
from pathlib import Path

from events.ids import InstanceName
from events.projection import fold_all
from orchestrator.cluster_report import status_dict
from orchestrator.rapi.users import RapiUsers
from tests.lab.faces.test_rapi import CLIENT_MODULE, USERS, rapi, require_debian, stock_client
from tests.support.cluster.cluster_harness import cluster
from tests.support.cluster.events import THREE, cluster_yaml


async def test_plan_apply_edit_remove_and_drift_as_a_user_would(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, THREE))

        plan = await c.corral("plan", "-f", str(f))
        assert plan.returncode == 2, plan.stdout + plan.stderr
        assert "+ create instance web1  (on node" in plan.stdout
        assert "Plan: 8 to create." in plan.stdout  # cluster, 4 nodes, 3 instances

        applied = await c.corral("apply", "-f", str(f), "--wait", "-m", "first cut")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "all 3 converged" in applied.stdout
        for name in ("web1", "web2", "db1"):
            assert len(c.running_on(name)) == 1
        same = await c.corral("plan", "-f", str(f))
        assert same.returncode == 0 and "No changes" in same.stdout

        # One instance's memory changes: the plan shows exactly that.
        f.write_text(cluster_yaml(c, THREE.replace("memory: 1G", "memory: 2G")))
        plan = await c.corral("plan", "-f", str(f), "--json")
        assert plan.returncode == 2
        doc = json.loads(plan.stdout)
        assert [(ch["action"], ch["kind"], ch["name"]) for ch in doc["changes"]] == [
            ("modify", "instance", "db1")
        ]
        assert doc["changes"][0]["fields"] == [{"field": "memory", "old": "1G", "new": "2G"}]

        # Removing one needs --allow-destroy; without it nothing is recorded.
        without_web2 = THREE.replace(
            "  - name: web2\n    memory: 512M\n    vcpus: 1\n    disks: [10G]\n", ""
        )
        f.write_text(cluster_yaml(c, without_web2))
        revision = engine.state.revision
        refused = await c.corral("apply", "-f", str(f))
        assert refused.returncode == 1 and "--allow-destroy" in refused.stderr
        assert engine.state.revision == revision
        removed = await c.corral("apply", "-f", str(f), "--allow-destroy", "--wait")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        await c.wait_for("web2 gone from the nodes", lambda: c.running_on("web2") == [])
        for host in c.lab.fabric.hosts.values():
            assert "web2-d0" not in host.volumes and "web2-d0" not in host.copies

        # An imperative stop: recorded with the etcd identity as actor, and plan shows
        # the drift.
        stopped = await c.corral("instance", "stop", "web1", "--wait", identity="carol")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert c.running_on("web1") == []
        drift = await c.corral("plan", "-f", str(f))
        assert drift.returncode == 2
        assert "undo commands" in drift.stdout and "> start instance web1" in drift.stdout
        history = await c.corral("events", "--object", "web1", "--type", "instance.", "--json")
        actors = [e["actor"] for e in json.loads(history.stdout)]
        assert "user:carol" in actors

        status = await c.corral("status", "--json")
        d = json.loads(status.stdout)
        assert d["instances"]["total"] == 2
        assert d["instances"]["by_status"] == {"ADMIN_down": 1, "running": 1}
        text = await c.corral("status")
        assert text.returncode == 0 and "node1" in text.stdout

        verify = await c.corral("cluster", "verify", "--json")
        assert json.loads(verify.stdout)["errors"] == 0, verify.stdout


async def test_events_at_a_revision_show_the_state_of_that_moment(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, THREE))
        assert (await c.corral("apply", "-f", str(f), "--wait")).returncode == 0
        then = engine.state.revision
        events_then = [(r, e) async for r, e in c.store.read_all() if r <= then]
        captured = status_dict(fold_all(events_then), now=0)
        stop = await c.corral("instance", "stop", "db1", "--wait")
        assert stop.returncode == 0
        past = json.loads((await c.corral("events", "--at", str(then), "--json")).stdout)
        now = json.loads((await c.corral("status", "--json")).stdout)
        assert past["revision"] == captured["revision"] == then
        assert past["instances"] == captured["instances"]
        assert past["instances"]["by_status"] == {"running": 3}
        assert now["instances"]["by_status"] == {"ADMIN_down": 1, "running": 2}


async def test_bad_input_is_named_and_changes_nothing(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start_engine()
        f = tmp_path / "cluster.yaml"
        good = cluster_yaml(c, THREE)
        bad = good.replace("memory: 1G", "memory: lots").replace(
            "  - name: web2", "  - name: 'web2; rm -rf /'"
        )
        f.write_text(bad)
        before = await c.store.current_revision()
        for cmd in ("plan", "apply"):
            out = await c.corral(cmd, "-f", str(f))
            assert out.returncode == 1, out.stdout
            assert "Traceback" not in out.stderr
            assert f"{f}:" in out.stderr and "memory" in out.stderr and "web2" in out.stderr
        assert await c.store.current_revision() == before
        # Unknown objects and unsafe names on the command line.
        for argv in (
            ("instance", "stop", "nosuch"),
            ("instance", "info", "../etc"),
            ("node", "drain", "node9"),
            ("job", "cancel", "nope"),
            ("events", "--since", "yesterday-ish"),
        ):
            out = await c.corral(*argv)
            assert out.returncode == 1, (argv, out.stdout, out.stderr)
            assert "Traceback" not in out.stderr and out.stderr.startswith("corral ")
        assert await c.store.current_revision() == before
        # An etcd that does not answer is said plainly.
        out = await c.corral("status", "--etcd", "https://127.0.0.1:1")
        assert out.returncode == 1 and "is not reachable" in out.stderr


async def test_console_reaches_the_serial_console_of_the_primary(tmp_path: Path) -> None:
    import asyncio
    import os
    import subprocess
    import sys

    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, THREE))
        assert (await c.corral("apply", "-f", str(f), "--wait")).returncode == 0
        env = {**os.environ, **c.etcd.client_env(), "CORRAL_CLUSTER": "lab"}
        argv = [
            sys.executable,
            "-m",
            "orchestrator.cli.main",
            "instance",
            "console",
            "db1",
            "--known-hosts",
            str(c.lab.known_hosts_path),
            "--client-key",
            str(c.lab.client_key_path),
        ]
        done = await asyncio.to_thread(
            subprocess.run,
            argv,
            input=b"root\r\x1d",
            capture_output=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        primary = engine.state.placements[InstanceName("db1")].primary
        assert b"db1 login: root" in done.stdout, done.stdout
        assert f"on {primary}".encode() in done.stderr
        no_keys = await c.corral("instance", "console", "db1")
        assert no_keys.returncode == 1 and "--known-hosts" in no_keys.stderr

        # --vnc: a local forward to the VM's VNC display on the node's loopback; the
        # printed port answers with the VNC server's RFB banner.
        minor = engine.state.placements[InstanceName("db1")].disks[0].minor
        vnc = await asyncio.create_subprocess_exec(
            *argv, "--vnc", stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        try:
            assert vnc.stdout is not None and vnc.stderr is not None
            line = await asyncio.wait_for(vnc.stdout.readline(), 60)
            assert line.strip().isdigit(), (line, await vnc.stderr.read())
            said = (await vnc.stderr.readline()).decode()
            assert f"display {minor} on {primary}" in said and f"port {5900 + minor}" in said
            reader, writer = await asyncio.open_connection("127.0.0.1", int(line))
            assert await asyncio.wait_for(reader.readexactly(12), 10) == b"RFB 003.008\n"
            writer.write(b"RFB 003.008\n")
            assert await asyncio.wait_for(reader.readexactly(2), 10) == b"\x01\x01"
            writer.close()
        finally:
            vnc.terminate()
            await vnc.wait()

        # Ganeti's stock client: GetInstanceConsole answers Ganeti's InstanceConsole.
        require_debian(CLIENT_MODULE, "python3-ganeti-rapi")
        async with (
            rapi(c, RapiUsers.from_text(USERS)) as port,
            stock_client(tmp_path, port, "ops", "opspw") as gc,
        ):
            got = await gc.call("GetInstanceConsole", "db1")
            node = engine.state.desired.nodes[primary]
            assert got == {
                "instance": "db1",
                "kind": "vnc",
                "host": node.address,
                "port": 5900 + minor,
                "display": minor,
            }, got
            missing = await gc.try_call("GetInstanceConsole", "nosuch")
            assert missing["code"] == 404, missing
