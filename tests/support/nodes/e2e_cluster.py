"""A corral cluster on booted node VMs for the end-to-end tests: the `corral` CLI
run as an operator runs it, each node VM added with `node add --install` (its host
key pinned from what the node itself says), and `corral serve` running with the QMP
fence agent and the timeouts TCG node VMs need. Sets up only; asserts nothing about
what corral then does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devtools.nodevm.vms import NodeVmSet
from tests.support.nodes.nodevms import root_ssh

SLOW_NODE_OPTIONS = (
    "--probe-timeout", "120", "--probe-interval", "5", "--command-timeout", "120",
    "--ssh-timeout", "60",
)  # fmt: skip


def node_entries(vms: NodeVmSet) -> str:
    """The desired-state file's `nodes:` entries for the booted node VMs (each
    reached on its forwarded SSH port, fenced through QMP)."""
    return "".join(
        f"""  - name: {n.name}
    address: 127.0.0.1
    port: {n.ssh_port}
    replication_address: {n.replication_address}
    memory: 560M
    disk: 1G
    cpus: 1
    fence: {{agent: fence_corral_qmp}}
"""
        for n in vms.nodes.values()
    )


def run_corral(
    etcd: str, cluster: str, *args: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "corral"
    return subprocess.run(
        [str(binary), *args, "--etcd", etcd, "--cluster", cluster],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def serving_cluster(
    vms: NodeVmSet, *, operator: Path, corral_key: Path, etcd: str, cluster: str, work: Path
) -> Iterator[None]:
    """Every node VM added to `cluster`, then `corral serve` until the block ends
    (its log's tail printed then)."""
    known = work / "known_hosts"
    for n in vms.nodes.values():
        fp = root_ssh(vms, n.name, operator, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
        added = run_corral(
            etcd, cluster, "node", "add", n.name, "--address", "127.0.0.1",
            "--port", str(n.ssh_port), "--replication-address", n.replication_address,
            "--ssh-key", str(operator), "--known-hosts", str(known),
            "--client-key", str(corral_key), "--host-key", fp.split()[1], "--install",
            "--memory", "560M", "--disk", "1G", "--cpus", "1", "--host-memory", "128M",
            "--host-cpus", "0",
        )  # fmt: skip
        assert added.returncode == 0, added.stdout + added.stderr
        print(added.stdout.splitlines()[-2])
    log = work / "serve.log"
    bindir = Path(sys.executable).parent
    seal = work / "seal.key"
    made = subprocess.run(
        [str(bindir / "corral"), "audit", "seal-key", "--key", str(seal),
         "--public-dir", str(work / "seal-keys")], capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    fencing = work / "fencing.yaml"
    plugs = "".join(f"      {n}: {{plug: {n}}}\n" for n in vms.nodes)
    fencing.write_text(
        "lab: false\nagents:\n  fence_corral_qmp:\n"
        f"    path: {bindir / 'fence_corral_qmp'}\n"
        f'    options: {{statedir: "{vms.state_dir}"}}\n    nodes:\n{plugs}'
    )
    serve = subprocess.Popen(
        [str(bindir / "corral"), "serve", "--etcd", etcd, "--cluster", cluster,
         "--known-hosts", str(known), "--client-key", str(corral_key),
         "--seal-key", str(seal), "--fencing-config", str(fencing),
         # A TCG node VM on this loaded host answers a probe in tens of seconds,
         # not milliseconds, and opens an SSH connection as slowly. A crashed one
         # still fails at once (its forwarded port is gone with its qemu), so
         # these cost no detection time here; see docs/real-nodes.md.
         *SLOW_NODE_OPTIONS],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield
    finally:
        serve.terminate()
        try:
            serve.wait(20)
        except subprocess.TimeoutExpired:
            serve.kill()
        print(log.read_text()[-3000:])
