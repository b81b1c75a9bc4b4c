"""The simulated hosts through a plain asyncssh client with pinned host keys: LVM,
DRBD resource pairs with sync, refusal of a second primary, link cuts, crashes,
QMP over unix-socket forwarding and a live migration, auth and host-key refusal,
and the fence agent."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from simulators.lab import HostConfig, Lab

RES = """resource web-d0 {{
  net {{ protocol C; allow-two-primaries {two}; }}
  on node1 {{ node-id 0; address 127.0.0.1:11000; device /dev/drbd0 minor 0;
             disk /dev/corral/web-d0; meta-disk internal; }}
  on node2 {{ node-id 1; address 127.0.0.1:11000; device /dev/drbd0 minor 0;
             disk /dev/corral/web-d0; meta-disk internal; }}
}}
"""


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = await Lab.start(
        hosts=[
            HostConfig(name="node1", memory_mib=4096, disk_mib=20480),
            HostConfig(name="node2", memory_mib=4096, disk_mib=20480),
        ],
        state_dir=tmp_path / "lab",
        sync_rate_mib_s=20000,
    )
    try:
        yield lab
    finally:
        await lab.stop()


async def connect(lab: Lab, name: str) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        lab.servers[name].port,
        username="root",
        client_keys=[str(lab.client_key_path)],
        known_hosts=str(lab.known_hosts_path),
    )


async def run(
    conn: asyncssh.SSHClientConnection, cmd: str, stdin: str = ""
) -> tuple[int, str, str]:
    r = await conn.run(cmd, input=stdin)
    return int(r.exit_status or 0), str(r.stdout), str(r.stderr)


async def status(conn: asyncssh.SSHClientConnection) -> dict[str, object]:
    rc, out, _ = await run(conn, "drbdsetup status --json web-d0")
    assert rc == 0
    got: dict[str, object] = json.loads(out)[0]
    return got


async def test_drbd_pair_syncs_refuses_second_primary_and_sees_faults(lab: Lab) -> None:
    c1, c2 = await connect(lab, "node1"), await connect(lab, "node2")
    for c in (c1, c2):
        assert (await run(c, "sudo -n lvcreate -L 1024m -n web-d0 corral -y"))[0] == 0
        assert (await run(c, "sudo -n tee /etc/drbd.d/web-d0.res", RES.format(two="no")))[0] == 0
        assert (await run(c, "drbdadm create-md --force web-d0 && drbdadm up web-d0"))[0] == 0
    rc, out, _ = await run(c1, "lvs --reportformat json --units m --nosuffix")
    assert json.loads(out)["report"][0]["lv"][0]["lv_size"] == "1024.00"
    s1 = await status(c1)
    assert s1["devices"][0]["disk-state"] == "Inconsistent"  # type: ignore[index]
    assert (await run(c1, "drbdadm primary --force web-d0"))[0] == 0
    for _ in range(50):
        s2 = await status(c2)
        if s2["devices"][0]["disk-state"] == "UpToDate":  # type: ignore[index]
            break
        await asyncio.sleep(0.05)
    assert s2["devices"][0]["disk-state"] == "UpToDate"  # type: ignore[index]
    assert s2["connections"][0]["peer-role"] == "Primary"  # type: ignore[index]
    rc, _, err = await run(c2, "drbdadm primary web-d0")
    assert rc == 11 and "Multiple primaries" in err
    lab.cut_link("node1", "node2")
    assert (await status(c1))["connections"][0]["connection-state"] == "Connecting"  # type: ignore[index]
    assert (await status(c2))["connections"][0]["connection-state"] == "Connecting"  # type: ignore[index]
    lab.restore_link("node1", "node2")
    assert (await status(c2))["connections"][0]["connection-state"] == "Connected"  # type: ignore[index]
    await lab.crash("node1")
    view = (await status(c2))["connections"][0]  # type: ignore[index]
    assert view["connection-state"] == "Connecting"
    assert view["peer_devices"][0]["peer-disk-state"] == "DUnknown"  # type: ignore[index]
    assert (await status(c2))["connections"][0]["peer-role"] == "Unknown"  # type: ignore[index]
    with pytest.raises(OSError):
        await connect(lab, "node1")
    rc, _, err = await run(c2, "no-such-tool --flag")
    assert rc == 127 and "command not found" in err


async def test_qmp_over_ssh_and_live_migration_leaves_one_copy(lab: Lab) -> None:
    c1, c2 = await connect(lab, "node1"), await connect(lab, "node2")
    for c in (c1, c2):
        await run(c, "lvcreate -L 1024m -n web-d0 corral")
        await run(c, "tee /etc/drbd.d/web-d0.res", RES.format(two="yes"))
        await run(c, "drbdadm create-md --force web-d0; drbdadm up web-d0")
    await run(c1, "drbdadm primary --force web-d0")
    qemu = (
        "qemu-system-x86_64 -name web -m 512 -smp 1 -daemonize -pidfile /run/corral/web.pid "
        "-qmp unix:/run/corral/web.qmp,server=on,wait=off -drive file=/dev/drbd0,format=raw"
    )
    rc, _, err = await run(c2, qemu)
    assert rc == 1 and "Wrong medium type" in err  # secondary: cannot open the disk
    assert (await run(c1, qemu))[0] == 0
    reader, writer = await c1.open_unix_connection("/run/corral/web.qmp")
    greeting = json.loads(await reader.readline())
    assert greeting["QMP"]["version"]["qemu"]["major"] == 7

    async def qmp(
        r: asyncssh.SSHReader[bytes], w: asyncssh.SSHWriter[bytes], cmd: str, **args: object
    ) -> dict[str, object]:
        w.write(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
        got: dict[str, object] = json.loads(await r.readline())
        return got

    assert (await qmp(reader, writer, "qmp_capabilities")) == {"return": {}}
    assert (await qmp(reader, writer, "query-status"))["return"]["status"] == "running"  # type: ignore[index]
    for _ in range(100):
        if (await status(c2))["devices"][0]["disk-state"] == "UpToDate":  # type: ignore[index]
            break
        await asyncio.sleep(0.02)
    assert (await run(c2, "drbdadm primary web-d0"))[0] == 0
    assert (await run(c2, qemu + " -incoming tcp:127.0.0.1:8001"))[0] == 0
    assert "return" in await qmp(reader, writer, "migrate", uri="tcp:127.0.0.1:8001")
    assert (await qmp(reader, writer, "query-migrate"))["return"]["status"] == "completed"  # type: ignore[index]
    assert (await qmp(reader, writer, "query-status"))["return"]["status"] == "postmigrate"  # type: ignore[index]
    await qmp(reader, writer, "quit")
    assert sorted(lab.host("node1").vms) == [] and lab.host("node2").vms["web"].status == "running"


async def test_wrong_host_key_and_unknown_key_are_refused(lab: Lab, tmp_path: Path) -> None:
    other = tmp_path / "other_known_hosts"
    key = asyncssh.generate_private_key("ssh-ed25519")
    other.write_text(f"[127.0.0.1]:{lab.servers['node1'].port} {key.export_public_key().decode()}")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await asyncssh.connect(
            "127.0.0.1",
            lab.servers["node1"].port,
            username="corral",
            client_keys=[str(lab.client_key_path)],
            known_hosts=str(other),
        )
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1",
            lab.servers["node1"].port,
            username="corral",
            client_keys=[stranger],
            known_hosts=str(lab.known_hosts_path),
        )


async def test_fence_agent_powers_off_and_reports_status(lab: Lab) -> None:
    agent = [sys.executable, "-m", "simulators.fence_agent"]
    opts = f"ip=127.0.0.1\nipport={lab.control_port}\nplug=node2\n"

    def fence(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            agent, input=f"action={action}\n" + opts, text=True, capture_output=True, timeout=20
        )

    assert (await asyncio.to_thread(fence, "status")).returncode == 0
    assert (await asyncio.to_thread(fence, "off")).returncode == 0
    assert (await asyncio.to_thread(fence, "status")).returncode == 2
    with pytest.raises(OSError):
        await connect(lab, "node2")
    assert (await asyncio.to_thread(fence, "on")).returncode == 0
    conn = await connect(lab, "node2")
    assert (await run(conn, "hostname"))[1] == "node2\n"


async def test_sim_cli_starts_a_lab_process_that_a_client_reaches(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    corral = [sys.executable, "-m", "orchestrator.cli.main"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*corral, *args, "--state-dir", str(state)], capture_output=True, text=True, timeout=60
        )

    bad = await asyncio.to_thread(cli, "sim", "up", "--memory", "lots")
    assert bad.returncode == 1 and "--memory" in bad.stderr
    up = await asyncio.to_thread(cli, "sim", "up", "--nodes", "2")
    assert up.returncode == 0, up.stderr
    try:
        inv = json.loads((state / "inventory.json").read_text())
        node = inv["nodes"][1]
        conn = await asyncssh.connect(
            "127.0.0.1",
            node["port"],
            username="corral",
            client_keys=[inv["client_key"]],
            known_hosts=inv["known_hosts"],
        )
        assert (await conn.run("hostname")).stdout == "node2\n"
        armed = await asyncio.to_thread(
            cli, "sim", "fault", "fail-command", "node2", "--match", "hostname", "--nth", "1"
        )
        assert armed.returncode == 0, armed.stderr
        failed = await conn.run("hostname")
        assert failed.exit_status == 1 and "simulated failure" in str(failed.stderr)
        assert (await conn.run("hostname")).stdout == "node2\n"
        no_peer = await asyncio.to_thread(cli, "sim", "fault", "cut-link", "node2", "--peer", "x")
        assert no_peer.returncode == 1 and "no peer node 'x'" in no_peer.stderr
        cut = await asyncio.to_thread(cli, "sim", "fault", "cut-link", "node2", "--peer", "node1")
        assert cut.returncode == 0, cut.stderr
        conn.close()
        crash = await asyncio.to_thread(cli, "sim", "fault", "crash", "node2")
        assert crash.returncode == 0
        status = await asyncio.to_thread(cli, "sim", "status")
        assert "node2      power off" in status.stdout
    finally:
        down = await asyncio.to_thread(cli, "sim", "down")
    assert down.returncode == 0 and not (state / "lab.pid").exists()


async def test_command_faults_and_a_failed_disk(lab: Lab) -> None:
    from simulators.fabric import CommandFault

    c1 = await connect(lab, "node1")
    lab.add_fault("node1", CommandFault(match="lvs", kind="fail", nth=2))
    assert (await run(c1, "lvs --reportformat json"))[0] == 0
    rc, _, err = await run(c1, "lvs --reportformat json")
    assert rc == 1 and "simulated failure" in err
    assert (await run(c1, "lvs --reportformat json"))[0] == 0
    lab.add_fault("node1", CommandFault(match="vgs", kind="slow", seconds=0.3))
    started = asyncio.get_running_loop().time()
    assert (await run(c1, "vgs --reportformat json"))[0] == 0
    assert asyncio.get_running_loop().time() - started >= 0.3
    lab.add_fault("node1", CommandFault(match="nproc", kind="hang"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(c1.run("nproc"), 0.5)
    await run(c1, "lvcreate -L 64m -n web-d0 corral")
    await run(c1, "tee /etc/drbd.d/web-d0.res", RES.format(two="no"))
    await run(c1, "drbdadm create-md --force web-d0 && drbdadm up web-d0")
    lab.fabric.fail_disk("node1", "web-d0")
    assert (await status(c1))["devices"][0]["disk-state"] == "Failed"  # type: ignore[index]
    rc, _, err = await run(c1, "drbdadm primary --force web-d0")
    assert rc == 11 and "UpToDate" in err
