"""A Ganeti OS definition run by the real node helper: a small provider the test
writes (shell scripts following OS API 20: ganeti_api_version, variants.list,
parameters.list, create, rename, verify, import, export) is found in the search
path, checked, and its `create` run with exactly the OS API's environment
against a real loop device standing for /dev/drbd3; the script makes an ext4
filesystem labelled with the instance's name and stores its environment and a
hostname file in it, which the test reads back with debugfs. A variant the
definition does not list and parameters its verify script refuses leave the
device untouched; a failing script answers its exit code and its log's last
lines; `rename` relabels the filesystem with OLD_INSTANCE_NAME given. The
requests are the orchestrator's own (reactors.nodes.commands); only paths differ
from production (the search path, the log directory and the device are mapped
to the test's). Root only."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.ids import InstanceName, NodeName
from events.specs import DiskSpec, ImageSpec, InstanceSpec, NicSpec
from nodehelper.env import Outcome, RealEnv
from nodehelper.main import run as run_helper
from reactors.nodes.commands import HelperRequest, os_script_request
from reactors.plans.steps import DiskConfig, DrbdPeerConfig
from tests.support.nodes.mapped_env import MappedEnv
from tests.support.tools import require_tool

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")

API = "20\n"
CREATE = """#!/bin/sh
# A tiny OS install: a filesystem named for the instance, its hostname, and the
# environment this script got (to be read back by the test).
set -e
echo "creating $INSTANCE_NAME ($OS_NAME variant $OS_VARIANT) on $DISK_0_PATH"
if [ "$OSP_FAIL" = yes ]; then echo "asked to fail"; exit 7; fi
mkfs.ext4 -F -q -L "$INSTANCE_NAME" "$DISK_0_PATH"
tmp=$(mktemp -d)
echo "$INSTANCE_NAME" > "$tmp/hostname"
env | sort > "$tmp/environment"
debugfs -w -R "write $tmp/hostname hostname" "$DISK_0_PATH" >/dev/null 2>&1
debugfs -w -R "write $tmp/environment environment" "$DISK_0_PATH" >/dev/null 2>&1
rm -r "$tmp"
echo "done"
"""
RENAME = """#!/bin/sh
set -e
echo "renaming $OLD_INSTANCE_NAME to $INSTANCE_NAME"
e2label "$DISK_0_PATH" "$INSTANCE_NAME"
"""
VERIFY = """#!/bin/sh
case "$OSP_FAIL" in ""|yes|no) exit 0 ;; esac
echo "fail must be yes or no, not $OSP_FAIL" >&2
exit 1
"""
MAC = "aa:00:00:12:34:56"


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    losetup = require_tool("losetup", "mount")
    backing = tmp_path / "disk0.img"
    backing.write_bytes(b"\0" * 32 * 1024 * 1024)
    device = subprocess.run(
        [losetup, "--find", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run([losetup, "-d", device], check=False)


def provider(root: Path) -> Path:
    path = root / "srv" / "tinyos"
    path.mkdir(parents=True)
    texts = {
        "ganeti_api_version": API,
        "variants.list": "default\nsmall\n",
        "parameters.list": "fail Whether the create script should fail\n",
        "create": CREATE,
        "rename": RENAME,
        "verify": VERIFY,
        "import": "#!/bin/sh\nexit 0\n",
        "export": "#!/bin/sh\nexit 0\n",
    }
    for name, text in texts.items():
        (path / name).write_text(text)
        if name not in ("ganeti_api_version", "variants.list", "parameters.list"):
            (path / name).chmod(0o755)
    return path.parent


def request(os_name: str, *, script: str = "create", params: tuple[tuple[str, str], ...] = (),
            name: str = "web1", old_name: str = "") -> HelperRequest:  # fmt: skip
    disk = DiskConfig(
        resource=f"{name}-d0", index=0, size_mib=32, minor=3, port=11003, volume_group="corral",
        hosts=(
            DrbdPeerConfig(node=NodeName("node1"), address="10.0.0.1", node_id=0),
            DrbdPeerConfig(node=NodeName("node2"), address="10.0.0.2", node_id=1),
        ),
    )  # fmt: skip
    spec = InstanceSpec(
        name=InstanceName(name),
        memory_mib=512,
        vcpus=2,
        disks=(DiskSpec(size_mib=32),),
        os=os_name,
        nics=(NicSpec(mac=MAC, link="br0", ip="192.0.2.10"),),
        image=ImageSpec(name=os_name, kind="ganeti-os", parameters=params),
    )
    return os_script_request(spec, (disk,), script=script, old_name=old_name)


def helper(env: MappedEnv, req: HelperRequest) -> Outcome:
    body = "" if req.body is None else json.dumps(req.body)
    return run_helper([*req.argv(term=1)], body.encode(), env)


def debugfs(device: str, command: str) -> str:
    tool = require_tool("debugfs", "e2fsprogs")
    done = subprocess.run([tool, "-R", command, device], capture_output=True, text=True, timeout=30)
    return done.stdout


def test_a_definitions_create_and_rename_scripts_run_on_a_real_device(
    tmp_path: Path, loop_device: str
) -> None:
    require_tool("mkfs.ext4", "e2fsprogs")
    search = provider(tmp_path)
    logs = tmp_path / "logs"
    env = MappedEnv(
        paths={
            "/srv/ganeti/os": str(search),
            "/var/log/corral/os": str(logs),
            "/dev/drbd3": loop_device,
            "/var/lib/corral": str(tmp_path / "state"),
        }
    )
    (tmp_path / "state").mkdir()

    # Refused before any script runs: the device stays zeroes.
    nope = helper(env, request("tinyos+large"))
    assert nope.rc == 65 and b"has no variant 'large'" in nope.stderr, nope
    bad = helper(env, request("tinyos+small", params=(("fail", "maybe"),)))
    assert bad.rc == 65 and b"fail must be yes or no, not maybe" in bad.stderr, bad
    with open(loop_device, "rb") as dev:
        assert dev.read(4 * 1024 * 1024).count(0) == 4 * 1024 * 1024

    # A failing script: its exit code and the last lines of its log.
    failed = helper(env, request("tinyos+small", params=(("fail", "yes"),)))
    assert failed.rc == 71, failed
    assert b"exited 7" in failed.stderr and b"asked to fail" in failed.stderr, failed.stderr

    done = helper(env, request("tinyos+small", params=(("fail", "no"),)))
    assert done.rc == 0, done
    assert debugfs(loop_device, "cat hostname") == "web1\n"
    seen = dict(line.split("=", 1) for line in debugfs(loop_device, "cat environment").splitlines())
    seen.pop("PWD", None)  # the shell's own
    seen.pop("SHLVL", None)
    seen.pop("_", None)
    assert seen == {
        "OS_API_VERSION": "20",
        "OS_NAME": "tinyos",
        "OS_VARIANT": "small",
        "PATH": "/sbin:/bin:/usr/sbin:/usr/bin",
        "INSTANCE_NAME": "web1",
        "INSTANCE_OS": "tinyos+small",
        "INSTANCE_PRIMARY_NODE": "node1",
        "INSTANCE_SECONDARY_NODES": "node2",
        "HYPERVISOR": "kvm",
        "DEBUG_LEVEL": "0",
        "DISK_COUNT": "1",
        "DISK_0_PATH": loop_device,
        "DISK_0_ACCESS": "rw",
        "DISK_0_SIZE": "32",
        "DISK_0_BACKEND_TYPE": "block",
        "NIC_COUNT": "1",
        "NIC_0_MAC": MAC,
        "NIC_0_IP": "192.0.2.10",
        "NIC_0_MODE": "bridged",
        "NIC_0_LINK": "br0",
        "NIC_0_BRIDGE": "br0",
        "INSTANCE_BE_maxmem": "512",
        "INSTANCE_BE_minmem": "512",
        "INSTANCE_BE_vcpus": "2",
        "OSP_FAIL": "no",
    }, seen
    created = sorted(logs.glob("add-tinyos+small-web1-*.log"))
    assert created and b"creating web1 (tinyos variant small)" in created[-1].read_bytes()
    assert oct(logs.stat().st_mode & 0o777) == "0o750"

    renamed = helper(env, request("tinyos+small", script="rename", name="db1", old_name="web1"))
    assert renamed.rc == 0, renamed
    label = subprocess.run(
        [require_tool("e2label", "e2fsprogs"), loop_device], capture_output=True, text=True
    ).stdout.strip()
    assert label == "db1"
    (log,) = logs.glob("rename-tinyos+small-web1-db1-*.log")
    assert log.read_text() == "renaming web1 to db1\n"


def test_a_missing_definition_or_api_version_is_refused(tmp_path: Path) -> None:
    search = provider(tmp_path)
    env = MappedEnv(paths={"/srv/ganeti/os": str(search), "/var/log/corral/os": str(tmp_path)})
    absent = helper(env, request("other+default"))
    assert absent.rc == 66 and b"no OS definition 'other' on this node" in absent.stderr
    (search / "tinyos" / "ganeti_api_version").write_text("5\n")
    old = helper(env, request("tinyos+default"))
    assert old.rc == 65 and b"API version mismatch" in old.stderr, old
    assert not list(tmp_path.glob("add-*.log"))  # nothing ran


def test_a_script_past_its_time_is_killed_with_its_children(tmp_path: Path) -> None:
    script = tmp_path / "create"
    pidfile = tmp_path / "child.pid"
    script.write_text(f"#!/bin/sh\necho started\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    script.chmod(0o755)
    env = RealEnv()
    done = env.run_script(
        [str(script)], env={"PATH": "/bin:/usr/bin"}, cwd=str(tmp_path),
        log=str(tmp_path / "logs" / "x.log"), timeout_s=1.0,
    )  # fmt: skip
    assert done.rc == 124 and b"started" in done.stderr and b"killed after 1s" in done.stderr
    child = int(pidfile.read_text())

    def alive() -> bool:  # a zombie (killed, not yet reaped by init) counts as gone
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    for _ in range(50):
        if not alive():
            break
        time.sleep(0.1)
    assert not alive(), "the script's child outlived it"
