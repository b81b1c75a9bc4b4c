"""A real guest on the node VMs: corral creates one instance with a NIC on `br0` and
the tiny OS image of its catalogue (tests.support.nodes.guest: Debian's cloud kernel
and a busybox initramfs, booted by direct kernel boot from the nodes'
/var/lib/corral/kernels; the image a raw disk whose first line the guest prints, so
the console shows corral wrote it onto the DRBD device). The guest runs nested: KVM
inside each TCG node VM (which sees an emulated SVM CPU), corral's default accel.

The operator's part, done over root SSH as a real operator would: the kernel,
initramfs and image copied to each node, and `br0` made by a boot-time unit on each
node (a bridge joined to the other nodes' by VXLAN over the replication network),
so the guest's network spans the node VMs. A console logger on each node reads the
VM's serial socket from the moment corral's qemu makes it.

Shown and checked: the console's boot lines and the address the guest took from
corral's cloud-init seed; ping and HTTP from another node VM (across the bridge)
before and after `corral instance migrate` (a ping every 0.2 s runs through it; its
loss is printed) and after its primary node VM is crashed and corral fails it over."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.local_etcd import LocalEtcd
from devtools.nodevm.vms import NodeVmSet
from tests.support.nodes.e2e_cluster import node_entries, run_corral, serving_cluster
from tests.support.nodes.guest import guest_kit
from tests.support.nodes.nodevms import node_vms, root_ssh

pytestmark = [pytest.mark.timeout(3600)]
CLUSTER = "e2e-guest"
# Three: a two-node cluster never fences by itself (no majority to judge a silent
# node by; docs/architecture.md, rule 7), so the failover needs a third node.
NODES = ("node1", "node2", "node3")
GUEST = "guest1"
GUEST_IP = "10.77.0.10"
KERNELS = "/var/lib/corral/kernels"
IMAGE = "/var/lib/corral/images/tiny.raw"
MARKER = b"corral-os tiny-1 on a real node VM\n"
# `quiet`: each console byte is an exit to the emulated hypervisor, so the kernel's
# ~330 boot lines cost ~95 s nested (measured; docs/real-nodes.md).
KERNEL_ARGS = "console=ttyS0 panic=-1 quiet"
BRIDGE_UNIT = """[Unit]
Description=br0 for guest NICs, joined to the other nodes by VXLAN
After=corral-node-setup.service
Before=ssh.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/guest-bridge
[Install]
WantedBy=multi-user.target
"""
CONSOLE_LOGGER = """import re, socket, sys, time
path, out = f"/run/corral/{sys.argv[1]}.serial", sys.argv[2]
with open(out, "ab", buffering=0) as log:
    while True:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
        except OSError:
            s.close()
            time.sleep(0.1)
            continue
        log.write(b"--- console connected\\n")
        since, line = time.monotonic(), b""
        while True:
            try:  # a qemu that quits (migrated away, stopped) resets the connection
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                break
            log.write(data)
            line = (line + data)[-256:]
            if re.search(rb"corral-guest-ready [^\\r\\n]*\\r?\\n", line):
                log.write(b"\\n--- ready %.1f s after qemu made the console\\n"
                          % (time.monotonic() - since))
                line = b""
        s.close()
"""


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = LocalEtcd(data_dir=tmp_path_factory.mktemp("etcd")).start()
    try:
        yield f"http://127.0.0.1:{server.client_port}"
    finally:
        server.stop()


def bridge_script(vms: NodeVmSet, name: str) -> str:
    node = vms.nodes[name]
    peers = "".join(
        f"bridge fdb append 00:00:00:00:00:00 dev vx0 dst {n.replication_address}\n"
        for n in vms.nodes.values()
        if n.name != name
    )
    return (
        "#!/bin/sh\nset -e\nmodprobe vxlan\n"
        "ip link add br0 type bridge\nip link set br0 up\n"
        f"ip link add vx0 type vxlan id 42 dstport 4789 local {node.replication_address} "
        f"dev eth1\n{peers}ip link set vx0 master br0\nip link set vx0 up\n"
        f"ip addr add 10.77.0.{node.index}/24 dev br0\n"
    )


def prepare_node(vms: NodeVmSet, name: str, operator: Path, image_sha: str) -> None:
    """The operator's part on one node: boot files, image, bridge, console logger."""
    kit = guest_kit()
    files = {
        f"{KERNELS}/vmlinuz": kit.kernel.read_bytes(),
        f"{KERNELS}/initrd.gz": kit.initrd.read_bytes(),
        IMAGE: MARKER + b"\0" * (1024 * 1024 - len(MARKER)),
        "/usr/local/sbin/guest-bridge": bridge_script(vms, name).encode(),
        "/etc/systemd/system/guest-bridge.service": BRIDGE_UNIT.encode(),
        "/usr/local/sbin/console-logger": CONSOLE_LOGGER.encode(),
    }
    for path, data in files.items():
        root_ssh(vms, name, operator, f"mkdir -p {Path(path).parent} && cat > {path}", stdin=data)
    out = root_ssh(
        vms, name, operator,
        f"chmod 755 /usr/local/sbin/guest-bridge && sha256sum {IMAGE} && "
        "systemctl daemon-reload && systemctl enable --now guest-bridge.service && "
        f"systemd-run --unit console-{GUEST} python3 /usr/local/sbin/console-logger "
        f"{GUEST} /root/{GUEST}.console >/dev/null 2>&1 && ip -br addr show br0",
    )  # fmt: skip
    assert out.split()[0] == image_sha, out
    print(f"{name}: {out.splitlines()[-1]}")


def desired(vms: NodeVmSet, image_sha: str) -> str:
    nodes = node_entries(vms)
    return f"""cluster:
  name: {CLUSTER}
  policy: {{n_plus_one: false, vcpu_ratio: 8.0, suspect_timeout: 60s, lost_timeout: 90s}}
  defaults:
    node: {{ssh_user: corral, volume_group: corral, host_memory: 128M, host_cpus: 0}}
nodes:
{nodes}images:
  - {{name: tiny, source: {IMAGE}, sha256: "{image_sha}", format: raw}}
instances:
  - name: {GUEST}
    memory: 96M
    vcpus: 1
    disks: [8M]
    os: tiny
    nics: [{{link: br0, ip: {GUEST_IP}/24}}]
    hvparams:
      kernel_path: {KERNELS}/vmlinuz
      initrd_path: {KERNELS}/initrd.gz
      kernel_args: "{KERNEL_ARGS}"
"""


def guest_row(etcd: str) -> dict[str, Any]:
    out = run_corral(etcd, CLUSTER, "instance", "list", "--json", timeout=120)
    if out.returncode != 0:
        return {}
    return next((r for r in json.loads(out.stdout) if r["name"] == GUEST), {})


def wait_row(etcd: str, until: Any, *, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    row = guest_row(etcd)
    while not (row and until(row)) and time.monotonic() < deadline:
        time.sleep(3)
        row = guest_row(etcd)
    return row


def console(vms: NodeVmSet, name: str, operator: Path) -> str:
    return root_ssh(vms, name, operator, f"cat /root/{GUEST}.console")


def wait_console(
    vms: NodeVmSet, name: str, operator: Path, pattern: str, *, after: int, timeout: float
) -> tuple[str, str]:
    """(the console text from offset `after`, the first match of `pattern` there)."""
    deadline = time.monotonic() + timeout
    while True:
        text = console(vms, name, operator)[after:]
        found = re.search(pattern, text)
        if found:
            return text, found.group(0)
        assert time.monotonic() < deadline, f"{name}: no {pattern!r} on the console:\n{text}"
        time.sleep(5)


def answers(vms: NodeVmSet, name: str, operator: Path) -> str:
    """Ping and HTTP to the guest from node VM `name`; one line saying what came back."""
    out = root_ssh(
        vms, name, operator,
        f"ping -c 5 -i 0.5 -W 3 {GUEST_IP} | tail -2 | head -1; python3 -c "
        f"\"import urllib.request as u; print(u.urlopen('http://{GUEST_IP}/', timeout=30)"
        ".read().decode().strip())\"",
    )  # fmt: skip
    assert " 0 received" not in out and f"hello from {GUEST}" in out, out
    return " | ".join(out.splitlines())


def test_guest_boots_migrates_and_fails_over(etcd_url: str, tmp_path: Path) -> None:
    image = MARKER + b"\0" * (1024 * 1024 - len(MARKER))
    image_sha = hashlib.sha256(image).hexdigest()
    began = time.monotonic()
    with node_vms(NODES, run_name="guest", memory_mib=640) as (vms, operator, corral_key):
        print(f"node VMs up in {time.monotonic() - began:.1f} s")
        for name in NODES:
            prepare_node(vms, name, operator, image_sha)
        with serving_cluster(
            vms, operator=operator, corral_key=corral_key, etcd=etcd_url, cluster=CLUSTER,
            work=tmp_path,
        ):  # fmt: skip
            _scenario(vms, operator, etcd_url, tmp_path, image_sha)
    print(f"guest e2e in {time.monotonic() - began:.1f} s")


def _scenario(vms: NodeVmSet, operator: Path, etcd: str, tmp_path: Path, image_sha: str) -> None:
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(desired(vms, image_sha))
    started = time.monotonic()
    applied = run_corral(
        etcd, CLUSTER, "apply", "-f", str(cluster_file), "--wait", "-m", "e2e", timeout=2400
    )
    print(applied.stdout[-2000:], applied.stderr[-1500:])
    row = wait_row(etcd, lambda r: r.get("status") == "running", timeout=1800)
    assert row.get("status") == "running", row
    primary = row["primary"]
    print(f"{GUEST} running on {primary} {time.monotonic() - started:.1f} s after apply")
    text, ready = wait_console(
        vms, primary, operator, r"corral-guest-ready \S+", after=0, timeout=900
    )
    print(f"{GUEST} ready on the console {time.monotonic() - started:.1f} s after apply; "
          f"console of {GUEST} on {primary}:\n{text}")  # fmt: skip
    assert ready == f"corral-guest-ready {GUEST_IP}/24", text
    assert f"corral-seed hostname={GUEST} address={GUEST_IP}/24" in text, text
    assert "corral-os-disk " + MARKER.decode().strip() in text, text
    print(f"{GUEST} address {GUEST_IP}/24 (from corral's cloud-init seed)")
    other = row["secondary"]
    print(f"from {other}, before migration: {answers(vms, other, operator)}")

    # A ping every 0.2 s from the source node through the live migration.
    root_ssh(
        vms, primary, operator,
        f"systemd-run --unit guest-ping sh -c 'exec ping -i 0.2 -W 2 {GUEST_IP} "
        "> /root/ping.log 2>&1' >/dev/null 2>&1",
    )  # fmt: skip
    time.sleep(5)
    started = time.monotonic()
    moved = run_corral(etcd, CLUSTER, "instance", "migrate", GUEST, "--wait", timeout=1800)
    print(moved.stdout[-1500:], moved.stderr[-1500:])
    row = wait_row(
        etcd, lambda r: r.get("status") == "running" and r["primary"] == other, timeout=1800
    )
    assert row.get("primary") == other, row
    print(f"{GUEST} live-migrated {primary} -> {other} in {time.monotonic() - started:.1f} s")
    time.sleep(5)
    pinged = root_ssh(
        vms,
        primary,
        operator,
        "systemctl kill -s INT guest-ping; sleep 2; tail -3 /root/ping.log",
    )
    print(f"ping from {primary} through the migration: {pinged.strip()}")
    print(f"from {primary}, after migration: {answers(vms, primary, operator)}")
    assert "corral-guest-ready" not in console(vms, other, operator), "guest rebooted"

    # Crash the guest's primary node VM: corral fences it and starts the guest on
    # the other node from its DRBD copy.
    victim, survivor = other, primary
    mark = len(console(vms, survivor, operator))
    crashed_at = time.monotonic()
    vms.crash(victim)
    row = wait_row(
        etcd, lambda r: r.get("status") == "running" and r["primary"] == survivor,
        timeout=1800,
    )  # fmt: skip
    assert row.get("primary") == survivor, row
    print(f"corral runs {GUEST} on {survivor} {time.monotonic() - crashed_at:.1f} s "
          f"after {victim} crashed")  # fmt: skip
    text, ready = wait_console(
        vms, survivor, operator, r"corral-guest-ready \S+", after=mark, timeout=900
    )
    print(f"{GUEST} ready again {time.monotonic() - crashed_at:.1f} s after the crash; "
          f"console on {survivor}:\n{text}")  # fmt: skip
    assert ready == f"corral-guest-ready {GUEST_IP}/24", text
    assert "corral-os-disk " + MARKER.decode().strip() in text, text
    third = next(n for n in NODES if n not in (victim, survivor))
    print(f"from {third}, after failover: {answers(vms, third, operator)}")
