"""Node VMs for tests: the cached Debian node image, an operator key, VMs booted
under qemu (`devtools.nodevm`) and removed afterwards, and plain SSH to them as
root for setting up a scenario (never for asserting through corral's own code).
Skips, naming why, where node VMs cannot run: not root, no apt, no qemu."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtools.nodevm.image import ensure, repo_root
from devtools.nodevm.vms import NodeVmSet


def keys(directory: Path) -> tuple[Path, Path]:
    """(operator's key, orchestrator's key), made once per test run."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("operator", "corral"):
        key = directory / name
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                check=True,
            )
        out.append(key)
    return out[0], out[1]


def require_node_vms() -> None:
    if os.geteuid() != 0:
        pytest.skip("node VMs need root (mmdebstrap, qemu, vde_switch)")
    if shutil.which("apt-get") is None:
        pytest.skip("node VMs need apt to install mmdebstrap, qemu and vde2")


@contextmanager
def node_vms(
    names: tuple[str, ...], *, run_name: str, timeout: float = 420.0, **options: object
) -> Iterator[tuple[NodeVmSet, Path, Path]]:
    """Boot `names`; yield (the VM set, operator key, orchestrator key)."""
    require_node_vms()
    started = time.monotonic()
    image = ensure()
    operator, corral = keys(repo_root() / "var" / "keys")
    vms = NodeVmSet.create(
        image,
        authorized_keys=[Path(str(operator) + ".pub").read_text()],
        run_name=run_name,
        names=names,
        **options,  # type: ignore[arg-type]
    )
    try:
        vms.start()
        for name in names:
            vms.wait_ssh(name, timeout=timeout - (time.monotonic() - started))
        yield vms, operator, corral
    finally:
        vms.stop()


def root_ssh(vms: NodeVmSet, name: str, operator: Path, command: str, stdin: bytes = b"") -> str:
    """Run `command` as root on a node VM over plain OpenSSH (`stdin` its input);
    its stdout."""
    proc = subprocess.run(
        [
            "ssh", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-i", str(operator), "-p", str(vms.nodes[name].ssh_port),
            "root@127.0.0.1", command,
        ],
        capture_output=True,
        input=stdin,
        timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(
            f"{name}: {command!r} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout.decode(errors="replace")
