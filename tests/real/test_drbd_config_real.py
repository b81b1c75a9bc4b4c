"""The DRBD resource files the node helper writes (from the request the orchestrator
sends) checked by the real drbdadm (Debian drbd-utils; no kernel module needed):
`dump` parses them and `-d up` prints the setup commands each node would run."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from events.ids import NodeName
from reactors.plans.steps import DiskConfig, DrbdPeerConfig
from tests.support.nodes.node_helper import resource_file
from tests.support.tools import require_tool

DISK = DiskConfig(
    resource="web-d0",
    index=0,
    size_mib=10240,
    minor=7,
    port=11007,
    volume_group="corral",
    hosts=(
        DrbdPeerConfig(node=NodeName("node1"), address="10.0.0.1", node_id=0),
        DrbdPeerConfig(node=NodeName("node2"), address="10.0.0.2", node_id=1),
    ),
)


def drbdadm(
    tmp: Path, text: str, *args: str, node: str = "node1"
) -> subprocess.CompletedProcess[str]:
    binary = require_tool("drbdadm", "drbd-utils")
    conf = tmp / "drbd.conf"
    conf.write_text(text)
    env = {**os.environ, "__DRBD_NODE__": node}
    return subprocess.run(
        [binary, "-c", str(conf), *args], capture_output=True, text=True, env=env, timeout=30
    )


def test_real_drbdadm_parses_the_generated_file(tmp_path: Path) -> None:
    for two in (False, True):
        text = resource_file(DISK, allow_two_primaries=two)
        dump = drbdadm(tmp_path, text, "dump", "web-d0")
        assert dump.returncode == 0, dump.stderr
        assert "10.0.0.2:11007" in dump.stdout and "minor 7" in dump.stdout
        assert bool(re.search(r"allow-two-primaries\s+yes", dump.stdout)) == two
        assert re.search(r"after-sb-1pri\s+disconnect", dump.stdout)


def test_real_drbdadm_dry_run_prints_setup_commands_on_both_nodes(tmp_path: Path) -> None:
    text = resource_file(DISK)
    for node, peer in (("node1", "10.0.0.2"), ("node2", "10.0.0.1")):
        up = drbdadm(tmp_path, text, "-d", "up", "web-d0", node=node)
        assert up.returncode == 0, up.stderr
        assert "drbdsetup new-resource web-d0" in up.stdout
        assert f"{peer}:11007" in up.stdout
        assert "/dev/corral/web-d0" in up.stdout
        primary = drbdadm(tmp_path, text, "-d", "primary", "--force", "web-d0", node=node)
        assert primary.returncode == 0 and "primary" in primary.stdout


def test_real_drbdadm_reports_a_broken_file_with_its_line(tmp_path: Path) -> None:
    broken = resource_file(DISK).replace("protocol C;", "protocol C")
    dump = drbdadm(tmp_path, broken, "dump", "web-d0")
    assert dump.returncode != 0
    assert "drbd.conf:" in dump.stderr


def test_the_84_file_is_valid_for_both_drbdadm_versions(tmp_path: Path) -> None:
    """Distribution kernels load DRBD 8.4, and drbd-utils hands their commands to
    drbdadm-84, which refuses `node-id`: the 8.4 file leaves it out, and DRBD 9's
    drbdadm takes that file too (numbering the two hosts in file order)."""
    drbdadm_84 = Path("/usr/lib/drbd/drbdadm-84")
    if not drbdadm_84.exists():
        import pytest

        pytest.skip("drbd-utils without drbdadm-84")
    text84 = resource_file(DISK, drbd_major=8)
    conf = tmp_path / "drbd.conf"
    for text, ok in ((text84, True), (resource_file(DISK), False)):
        conf.write_text(text)
        run = subprocess.run(
            [str(drbdadm_84), "-c", str(conf), "-d", "up", "web-d0"],
            capture_output=True,
            text=True,
            env={**os.environ, "__DRBD_NODE__": "node1"},
            timeout=30,
        )
        assert (run.returncode == 0) == ok, run.stderr
        if ok:
            assert (
                "drbdsetup-84 connect web-d0 ipv4:10.0.0.1:11007 ipv4:10.0.0.2:11007" in run.stdout
            )
        else:
            assert "but got 'node-id'" in run.stderr
    up9 = drbdadm(tmp_path, text84, "-d", "up", "web-d0", node="node2")
    assert up9.returncode == 0, up9.stderr
    assert "drbdsetup new-peer web-d0 0 --_name=node1" in up9.stdout
