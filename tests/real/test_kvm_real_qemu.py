"""The KVM driver against a real qemu-system-x86_64 on this machine (KVM when
/dev/kvm is usable, TCG otherwise; no guest OS): corral's own command line starts
it, QMP reports and changes its state, and a live migration between two local qemu
processes leaves exactly one running copy. The argv is the node helper's, built from
the request the orchestrator sends; only the paths differ from production (a temp
dir for /run/corral, a raw file for /dev/drbdN)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest

from events.ids import InstanceName, NodeName
from events.specs import DiskSpec, InstanceSpec
from reactors.nodes.qmp import qmp_session
from reactors.plans.steps import DiskConfig, DrbdPeerConfig
from tests.support.nodes.node_helper import qemu_argv
from tests.support.tools import require_tool

SPEC = InstanceSpec(
    name=InstanceName("web"), memory_mib=64, vcpus=1, disks=(DiskSpec(size_mib=16),)
)
DISK = DiskConfig(
    resource="web-d0",
    index=0,
    size_mib=16,
    minor=3,
    port=11003,
    volume_group="corral",
    hosts=(DrbdPeerConfig(node=NodeName("a"), address="127.0.0.1", node_id=0),),
)


def local_argv(tmp: Path, tag: str, *, incoming: tuple[str, int] | None = None) -> list[str]:
    binary = require_tool("qemu-system-x86_64", "qemu-system-x86")
    run = tmp / f"run-{tag}"
    run.mkdir(exist_ok=True)
    disk = tmp / "disk.raw"
    if not disk.exists():
        disk.write_bytes(b"\0" * 16 * 1024 * 1024)
    argv = qemu_argv(spec=SPEC, disks=(DISK,), incoming=incoming)
    argv = [a.replace("/run/corral", str(run)).replace("/dev/drbd3", str(disk)) for a in argv]
    argv[0] = binary
    kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
    return [a.replace("accel=kvm:tcg", "accel=kvm:tcg" if kvm else "accel=tcg") for a in argv]


async def qmp(
    sock: Path, *commands: tuple[str, dict[str, object] | None]
) -> list[dict[str, object]]:
    for _ in range(50):
        if sock.exists():
            break
        await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        return await qmp_session(reader, writer, list(commands))
    finally:
        writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture
def cleanup(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield
    for pidfile in tmp_path.glob("run-*/web.pid"):
        try:
            os.kill(int(pidfile.read_text().strip()), 9)
        except (OSError, ValueError):
            pass


async def test_start_status_stop_and_live_migration(tmp_path: Path, cleanup: None) -> None:
    src = local_argv(tmp_path, "src")
    done = subprocess.run(src, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    src_sock = tmp_path / "run-src" / "web.qmp"
    (status,) = await qmp(src_sock, ("query-status", None))
    assert status["return"]["status"] == "running"  # type: ignore[index]
    await qmp(src_sock, ("stop", None))
    (status,) = await qmp(src_sock, ("query-status", None))
    assert status["return"]["status"] == "paused"  # type: ignore[index]
    await qmp(src_sock, ("cont", None))

    port = free_port()
    dst = local_argv(tmp_path, "dst", incoming=("127.0.0.1", port))
    done = subprocess.run(dst, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    dst_sock = tmp_path / "run-dst" / "web.qmp"
    (status,) = await qmp(dst_sock, ("query-status", None))
    assert status["return"]["status"] == "inmigrate"  # type: ignore[index]
    await qmp(src_sock, ("migrate", {"uri": f"tcp:127.0.0.1:{port}"}))
    for _ in range(200):
        (mig,) = await qmp(src_sock, ("query-migrate", None))
        answer = mig["return"]
        assert isinstance(answer, dict)
        if answer.get("status") in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
    assert mig["return"]["status"] == "completed"  # type: ignore[index]
    (status,) = await qmp(dst_sock, ("query-status", None))
    assert status["return"]["status"] == "running"  # type: ignore[index]
    (status,) = await qmp(src_sock, ("query-status", None))
    assert status["return"]["status"] == "postmigrate"  # type: ignore[index]
    await qmp(src_sock, ("quit", None))
    for _ in range(50):
        if not pid_alive(tmp_path / "run-src" / "web.pid"):
            break
        await asyncio.sleep(0.05)
    assert not pid_alive(tmp_path / "run-src" / "web.pid")
    assert pid_alive(tmp_path / "run-dst" / "web.pid")  # exactly one copy runs
    await qmp(dst_sock, ("quit", None))
