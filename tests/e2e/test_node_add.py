"""`corral node add` and `corral node check` against a real node VM (Debian
bookworm, its 6.1 kernel with DRBD 8.4, real sshd), as an operator runs them: a
host missing a package, without its volume group and with a DRBD module that will
not load gets one FAILED line with the fix for each and is not added; a wrong
host key is refused before anything runs; `--install` then makes it pass, the
node is added, its key pinned, and corral's own account reaches DRBD through its
sudoers rule; `node check` is recorded."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_etcd import LocalEtcd
from devtools.nodevm.vms import NodeVmSet
from events.store import EventStore
from reactors.nodes.checks import HELPER_PATH
from tests.support.nodes.nodevms import node_vms, root_ssh

pytestmark = pytest.mark.timeout(1200)
CLUSTER = "e2e-add"


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[NodeVmSet, Path, Path]]:
    with node_vms(("node1",), run_name="add") as vms:
        yield vms


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = LocalEtcd(data_dir=tmp_path_factory.mktemp("etcd")).start()
    try:
        yield f"http://127.0.0.1:{server.client_port}"
    finally:
        server.stop()


def corral(etcd: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "corral"
    return subprocess.run(
        [str(binary), *args, "--etcd", etcd, "--cluster", CLUSTER],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "CORRAL_ACTOR": "e2e-operator"},
        stdin=subprocess.DEVNULL,
    )


def add_args(vms: NodeVmSet, operator: Path, corral_key: Path, known: Path) -> list[str]:
    n = vms.nodes["node1"]
    return [
        "node", "add", "node1", "--address", "127.0.0.1", "--port", str(n.ssh_port),
        "--replication-address", n.replication_address, "--ssh-key", str(operator),
        "--known-hosts", str(known), "--client-key", str(corral_key),
        # a 512 MiB node VM: the 1G default reserved for the host does not fit
        "--host-memory", "128M", "--host-cpus", "0",
    ]  # fmt: skip


def events(etcd: str) -> list[str]:
    async def read() -> list[str]:
        async with EventStore.connect([etcd], CLUSTER) as store:
            return [e.TYPE async for _, e in store.read_all()]

    return asyncio.run(read())


def fingerprint(vms: NodeVmSet, operator: Path) -> str:
    out = root_ssh(vms, "node1", operator, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
    return out.split()[1]


def test_a_broken_host_gets_one_failed_line_per_problem_and_is_not_added(
    node: tuple[NodeVmSet, Path, Path], etcd_url: str, tmp_path: Path
) -> None:
    vms, operator, corral_key = node
    root_ssh(vms, "node1", operator, "echo 'install drbd /bin/false' > /etc/modprobe.d/broken.conf"
             " && { modprobe -r drbd || true; } && apt-get remove -y -q drbd-utils >/dev/null"
             " && vgremove -q -f corral")  # fmt: skip
    known = tmp_path / "known_hosts"
    fp = fingerprint(vms, operator)
    run = corral(etcd_url, *add_args(vms, operator, corral_key, known), "--host-key", fp)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    lines = {line.split()[1] + " " + line.split()[2]: line for line in out.splitlines()
             if line.startswith(("ok", "FAILED"))}  # fmt: skip
    assert lines["package drbd-utils"].startswith("FAILED")
    assert "fix: apt-get install drbd-utils" in out
    assert lines["drbd module"].startswith("FAILED")
    assert "does not load: modprobe: ERROR" in lines["drbd module"]
    assert "/etc/modprobe.d" in out  # the fix names where the block lives
    assert lines["volume group"].startswith("FAILED") and "no volume group 'corral'" in out
    assert "fix: pvcreate /dev/DISK && vgcreate corral /dev/DISK" in out
    assert lines["package lvm2"].startswith("ok")
    assert "node node1 not added" in out
    assert events(etcd_url) == [] and not known.exists()


def test_a_wrong_host_key_is_refused_before_anything_runs(
    node: tuple[NodeVmSet, Path, Path], etcd_url: str, tmp_path: Path
) -> None:
    vms, operator, corral_key = node
    known = tmp_path / "known_hosts"
    wrong = "SHA256:" + "A" * 43
    run = corral(etcd_url, *add_args(vms, operator, corral_key, known), "--host-key", wrong)
    assert run.returncode == 1
    assert f"FAILED host key  127.0.0.1:{vms.nodes['node1'].ssh_port} offered SHA256:" in run.stdout
    assert f"not {wrong}" in run.stdout and "fix:" in run.stdout
    assert "package" not in run.stdout  # no check ran on a host we could not identify
    assert events(etcd_url) == [] and not known.exists()
    unasked = corral(etcd_url, *add_args(vms, operator, corral_key, known))
    assert unasked.returncode == 1 and "--host-key SHA256:" in unasked.stderr


def test_install_fixes_what_it_can_and_the_node_is_added(
    node: tuple[NodeVmSet, Path, Path], etcd_url: str, tmp_path: Path
) -> None:
    vms, operator, corral_key = node
    # What a person must fix: the module block and the volume group.
    root_ssh(vms, "node1", operator, "rm /etc/modprobe.d/broken.conf && "
             "pvcreate -q -y -ff /dev/vdb && vgcreate -q corral /dev/vdb")  # fmt: skip
    known = tmp_path / "known_hosts"
    fp = fingerprint(vms, operator)
    fence = ["--fence-agent", "fence_corral_qmp", "--fence-option", f"statedir={vms.state_dir}",
             "--fence-option", "plug=node1"]  # fmt: skip
    run = corral(
        etcd_url, *add_args(vms, operator, corral_key, known), "--host-key", fp, "--install", *fence
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "installing on node1" in run.stdout and "node node1 added: DRBD 8.4." in run.stdout
    assert events(etcd_url) == ["node.checked", "node.declared"]
    assert known.read_text().startswith(f"[127.0.0.1]:{vms.nodes['node1'].ssh_port} ssh-ed25519 ")
    # what --install did, seen on the node itself
    assert root_ssh(vms, "node1", operator, "dpkg-query -W -f='${Status}' drbd-utils") == (
        "install ok installed"
    )
    assert "drbd" in root_ssh(vms, "node1", operator, "cat /etc/modules-load.d/corral.conf")
    out = subprocess.run(
        ["ssh", "-q", "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-i", str(corral_key), "-p", str(vms.nodes["node1"].ssh_port),
         "corral@127.0.0.1",
         f"sudo -n {HELPER_PATH} probe --drbd84; sudo -n cat /etc/shadow"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # corral's account reaches DRBD through the helper (its probe), pinned key and all
    assert "exists -" in out.stdout
    assert "root:" not in out.stdout  # and nothing else as root
    again = corral(etcd_url, "node", "check", "node1", "--ssh-key", str(operator),
                   "--known-hosts", str(known), "--client-key", str(corral_key))  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "all checks passed (recorded)" in again.stdout
    assert events(etcd_url) == ["node.checked", "node.declared", "node.checked"]
    node_list = corral(etcd_url, "node", "list", "--json")
    assert [row["name"] for row in json.loads(node_list.stdout)] == ["node1"]


def test_the_fence_agent_powers_the_node_vm_off_through_qmp(
    node: tuple[NodeVmSet, Path, Path],
) -> None:
    """fence_corral_qmp as corral runs it (options on stdin, ClusterLabs exit
    codes): status ON, then off returns only once the qemu process is gone, then
    status OFF (rc 2). Last in this module: the node stays off."""
    vms, _, _ = node
    vm = vms.nodes["node1"]
    assert oct(vm.qmp_path.stat().st_mode & 0o777) == "0o660"  # reachable by its group
    agent = Path(sys.executable).parent / "fence_corral_qmp"

    def fence(action: str, plug: str = "node1") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(agent)], input=f"action={action}\nplug={plug}\nstatedir={vms.state_dir}\n",
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    pid = vm.pid()
    assert pid is not None
    status = fence("status")
    assert (status.returncode, status.stdout) == (0, "Status: ON\n"), status
    off = fence("off")
    assert (off.returncode, off.stdout) == (0, "Success: Powered OFF\n"), off
    assert not Path(f"/proc/{pid}").exists() or vm.pid() is None
    status = fence("status")
    assert (status.returncode, status.stdout) == (2, "Status: OFF\n"), status
    unknown = fence("status", plug="nosuch")
    assert unknown.returncode == 1 and "plug" in unknown.stdout
