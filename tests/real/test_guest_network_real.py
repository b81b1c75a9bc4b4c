"""A real guest on real bridges, started by the node helper's own code: two network
namespaces stand for two nodes, each with a bridge `br0`, joined by a veth pair
(the switch between them). The helper's `launch` builds qemu's argv (TCG forced by
hv kvm_flag=disabled), qemu makes the tap and the helper bridges it; the guest
(Debian's kernel, an initramfs from tests.support.nodes.guest, its address from the
kernel command line: the cloud-init seed is not used here) answers ping and HTTP.
A live migration to the other namespace keeps MAC and bridge and the guest keeps
answering (the ping loss is printed); a NIC and a disk hotplugged by the helper's
`vm-hotplug` show in the guest's /sys/class/net and /sys/block, read over the
serial console. Only the paths differ from production (a temp dir for
/run/corral, a raw file for /dev/drbdN, the kernel from var/guest), and every
command runs inside the node's namespace. Root only."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodehelper.hotplug import hotplug, hotplug_request
from nodehelper.vm import launch, start_request
from tests.support.nodes.guest import GuestKit, guest_kit
from tests.support.nodes.mapped_env import NetnsEnv

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

GUEST_IP = "10.99.0.10"
MAC = "aa:00:00:5e:00:01"


class Serial:
    """The guest's serial console: everything it printed, and commands typed in."""

    def __init__(self, path: Path) -> None:
        for _ in range(100):
            if path.exists():
                break
            time.sleep(0.05)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.text = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            self.text += data.decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text, re.S)
            if m:
                return m.group(m.lastindex or 0)
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} on the serial console:\n{self.text[-2000:]}")

    def ask(self, command: str, timeout: float = 20.0) -> str:
        marker = f"done-{time.monotonic_ns()}"
        self.sock.sendall(f"{command}; echo {marker}\n".encode())
        out = self.wait_for(rf"{re.escape(command)}.*?\n(.*?){marker}\r?\n", timeout)
        return out

    def close(self) -> None:
        self.sock.close()


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[str, str]]:
    tag = f"{os.getpid() % 10000}"
    a, b = f"crna{tag}", f"crnb{tag}"
    try:
        for ns, addr in ((a, "10.99.0.1/24"), (b, "10.99.0.2/24")):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", ns, "addr", "add", addr, "dev", "br0")
            sh("ip", "-n", ns, "link", "set", "br0", "up")
        sh("ip", "-n", a, "link", "add", "sw", "type", "veth", "peer", "name", "sw", "netns", b)
        for ns in (a, b):
            sh("ip", "-n", ns, "link", "set", "sw", "master", "br0", "up")
        yield a, b
    finally:
        for pidfile in tmp_path.glob("run-*/web.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), 9)
            except (OSError, ValueError):
                pass
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def request(kit: GuestKit, *, incoming: tuple[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "web",
        "memory_mib": 128,
        "vcpus": 1,
        "disks": [{"index": 0, "minor": 3}],
        "nics": [{"index": 0, "mac": MAC, "link": "br0"}],
        "vnc": {"display": 3},
        "hv": {
            "kvm_flag": "disabled",
            "kernel_path": "/var/lib/corral/kernels/vmlinuz",
            "initrd_path": "/var/lib/corral/kernels/initrd.gz",
            "kernel_args": f"console=ttyS0 quiet panic=-1 corral.ip={GUEST_IP}/24",
        },
    }
    if incoming is not None:
        body["incoming"] = {"address": incoming[0], "port": incoming[1]}
    return body


def env_for(ns: str, tmp: Path, kit: GuestKit, run: str) -> NetnsEnv:
    (tmp / run).mkdir(exist_ok=True)
    return NetnsEnv(
        ns=ns,
        paths={
            "/run/corral": str(tmp / run),
            "/var/lib/corral/kernels": str(kit.kernel.parent),
            "/dev/drbd3": str(tmp / "d0.raw"),
            "/dev/drbd4": str(tmp / "d1.raw"),
        },
    )


def ping(kit: GuestKit, ns: str, count: int, interval: str = "0.2") -> tuple[int, int]:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            str(kit.busybox),
            "ping",
            "-c",
            str(count),
            "-i",
            interval,
            "-W",
            "1",
            GUEST_IP,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    m = re.search(r"(\d+) packets transmitted, (\d+) packets received", done.stdout)
    assert m, done.stdout + done.stderr
    return int(m.group(1)), int(m.group(2))


GET = (
    "import socket; s = socket.create_connection(('{ip}', 80), timeout=5);"
    "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); data = b''\n"
    "while chunk := s.recv(4096): data += chunk\n"
    "print(data.split(b'\\r\\n\\r\\n', 1)[1].decode(), end='')"
)


def http(kit: GuestKit, ns: str) -> str:
    """A TCP request from the node's namespace (busybox's static wget crashes on
    glibc hosts, so Python's socket)."""
    return sh("ip", "netns", "exec", ns, sys.executable, "-c", GET.format(ip=GUEST_IP))


def test_guest_on_a_bridge_answers_across_live_migration_and_sees_hotplugged_devices(
    tmp_path: Path, nodes: tuple[str, str]
) -> None:
    a, b = nodes
    kit = guest_kit()
    for disk in ("d0.raw", "d1.raw"):
        (tmp_path / disk).write_bytes(b"\0" * 8 * 1024 * 1024)
    env_a = env_for(a, tmp_path, kit, "run-a")
    started = time.monotonic()
    done = launch(env_a, start_request(request(kit)))
    assert done.rc == 0, done.stderr
    serial = Serial(tmp_path / "run-a" / "web.serial")
    serial.wait_for(r"corral-guest-ready", 60)
    boot_s = time.monotonic() - started
    bridged = sh("ip", "-n", a, "-o", "link", "show", "master", "br0")
    assert "cr" in bridged  # the helper put qemu's tap on br0
    sent, got = ping(kit, a, 3)
    assert got >= 1, (sent, got)
    assert http(kit, a).strip() == "hello from corral-guest"

    # Live migration to node b: same MAC and bridge (the incoming qemu's request is
    # the same but for `incoming`); the guest answers throughout, from the same ns.
    env_b = env_for(b, tmp_path, kit, "run-b")
    done = launch(env_b, start_request(request(kit, incoming=("10.99.0.2", 12003))))
    assert done.rc == 0, done.stderr
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", a, str(kit.busybox), "ping", "-i", "0.1", "-W", "1", GUEST_IP],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)
    migrated = time.monotonic()
    env_a.qmp("/run/corral/web.qmp", [("migrate", {"uri": "tcp:10.99.0.2:12003"})])
    status: dict[str, Any] = {}
    for _ in range(600):
        (reply,) = env_a.qmp("/run/corral/web.qmp", [("query-migrate", {})])
        status = dict(reply["return"])  # type: ignore[call-overload]
        if status.get("status") in ("completed", "failed"):
            break
        time.sleep(0.1)
    assert status.get("status") == "completed", status
    migrate_s = time.monotonic() - migrated
    env_a.qmp("/run/corral/web.qmp", [("quit", {})])
    time.sleep(2.0)
    pinger.send_signal(2)
    out, _ = pinger.communicate(timeout=10)
    m = re.search(r"(\d+) packets transmitted, (\d+) packets received", out)
    assert m, out
    sent, got = int(m.group(1)), int(m.group(2))
    print(
        f"\nboot {boot_s:.1f}s; migration {migrate_s:.1f}s "
        f"(downtime {status.get('downtime')} ms); ping over migration: {sent - got} of "
        f"{sent} lost"
    )
    assert got >= sent - 10, out
    assert http(kit, a).strip() == "hello from corral-guest"
    bridged = sh("ip", "-n", b, "-o", "link", "show", "master", "br0")
    assert "cr" in bridged

    # Hotplug on node b: a second NIC (same bridge) and a second disk.
    serial.close()
    serial = Serial(tmp_path / "run-b" / "web.serial")
    nic = {"index": 1, "mac": "aa:00:00:5e:00:02", "link": "br0"}
    done = hotplug(env_b, hotplug_request({"name": "web", "action": "add", "nic": nic}))
    assert done.rc == 0, done.stderr
    new_disk = {"index": 1, "minor": 4}
    done = hotplug(env_b, hotplug_request({"name": "web", "action": "add", "disk": new_disk}))
    assert done.rc == 0, done.stderr
    # Disk 1 again (a retry whose first answer was lost): qemu answers 'Duplicate'
    # for its block node and device, so it is there; nothing is taken out.
    again = hotplug(env_b, hotplug_request({"name": "web", "action": "add", "disk": new_disk}))
    assert again.rc == 0 and b"disk 1 was already in web" in again.stdout, again
    seen = ""
    for _ in range(20):
        seen = serial.ask("ls /sys/class/net /sys/block")
        if "eth1" in seen and "vdb" in seen:
            break
        time.sleep(0.5)
    assert "eth1" in seen and "vdb" in seen and "vda" in seen, seen
    print(f"guest sees after hotplug: {' '.join(seen.split())}")
    assert http(kit, a).strip() == "hello from corral-guest"
