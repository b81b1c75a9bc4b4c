"""Debian's `ganeti-instance-debootstrap` package, unchanged, run by the real node
helper: its definition in /usr/share/ganeti/os/debootstrap is found, checked and
its `create` installs Debian (debootstrap from deb.debian.org) onto a loop device
standing for /dev/drbd3; the test then reads the guest's /etc/hostname and
/etc/debian_version from the filesystem with debugfs, and the package's `rename`
rewrites the hostname. Configured as the package documents (a variant file in
/etc/ganeti/instance-debootstrap/variants/, listed in its variants.list): suite
bookworm, and no partition table (PARTITION_STYLE=none: kpartx needs
device-mapper, which containers often lack). Only paths differ from production
(the device and the log directory). Root only, network needed, several minutes:
marked slow (`make bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodehelper.main import run as run_helper
from tests.real.test_os_definition_real import debugfs, request
from tests.support.nodes.mapped_env import MappedEnv
from tests.support.tools import require_tool

DEFINITION = Path("/usr/share/ganeti/os/debootstrap")
CONFIG = Path("/etc/ganeti/instance-debootstrap")
VARIANT = "corraltest"
MIRROR = "http://deb.debian.org/debian"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
]


def _mirror_answers() -> bool:
    try:
        with urllib.request.urlopen(f"{MIRROR}/dists/bookworm/Release", timeout=10) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def variant() -> Iterator[str]:
    """A variant of the package's own configuration (removed afterwards)."""
    if not (DEFINITION / "create").exists():
        pytest.skip("needs Debian's ganeti-instance-debootstrap (apt-get install it)")
    if not _mirror_answers():
        pytest.skip(f"{MIRROR} does not answer: debootstrap needs it")
    conf = CONFIG / "variants" / f"{VARIANT}.conf"
    listed = CONFIG / "variants.list"
    before = listed.read_text()
    conf.write_text(f'SUITE="bookworm"\nMIRROR="{MIRROR}"\nPARTITION_STYLE="none"\n')
    listed.write_text(before.rstrip("\n") + f"\n{VARIANT}\n")
    try:
        yield VARIANT
    finally:
        listed.write_text(before)
        conf.unlink()


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    losetup = require_tool("losetup", "mount")
    backing = tmp_path / "disk0.img"
    with open(backing, "wb") as f:
        f.truncate(1536 * 1024 * 1024)  # sparse; the package wants at least 511 MiB
    device = subprocess.run(
        [losetup, "--find", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run([losetup, "-d", device], check=False)


def test_instance_debootstrap_installs_debian_and_renames_it(
    tmp_path: Path, variant: str, loop_device: str
) -> None:
    require_tool("debootstrap", "debootstrap")
    logs = tmp_path / "logs"
    env = MappedEnv(
        paths={
            "/dev/drbd3": loop_device,
            "/var/log/corral/os": str(logs),
            "/var/lib/corral": str(tmp_path / "state"),
        }
    )
    (tmp_path / "state").mkdir()

    def helper(**kw: object) -> tuple[int, str]:
        req = request(f"debootstrap+{variant}", **kw)  # type: ignore[arg-type]
        done = run_helper([*req.argv(term=1)], json.dumps(req.body).encode(), env)
        return done.rc, (done.stdout + done.stderr).decode(errors="replace")

    rc, said = helper(params=(("filesystem", "ext4"),))
    (log,) = logs.glob(f"add-debootstrap+{variant}-web1-*.log")
    assert rc == 0, said + log.read_text()[-3000:]
    assert debugfs(loop_device, "cat /etc/hostname") == "web1\n"
    assert debugfs(loop_device, "cat /etc/debian_version").startswith("12.")
    assert "UUID=" in debugfs(loop_device, "cat /etc/fstab")

    # The package's verify refuses a filesystem it does not know: nothing runs.
    rc, said = helper(params=(("filesystem", "xfs"),), name="web9")
    assert rc == 65 and "Invalid value 'xfs' for the filesystem parameter" in said, said

    rc, said = helper(script="rename", name="db1", old_name="web1")
    assert rc == 0, said
    assert debugfs(loop_device, "cat /etc/hostname") == "db1\n"
