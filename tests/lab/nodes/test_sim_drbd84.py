"""The simulator's DRBD 8.4 mode against outputs captured from real node VMs
(Debian's 6.1 kernel with DRBD 8.4.11, drbd-utils 9.22; tests/fixtures/real/drbd84/):
the same events2 objects and keys, the same refusals with the same texts and exit
statuses, and corral's own probe parsing what the simulated 8.4 node prints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from events.ids import NodeName
from reactors.nodes.probe import parse_probe, probe_line
from reactors.plans.steps import DiskConfig, DrbdPeerConfig
from simulators.lab import HostConfig, Lab
from tests.support.nodes.node_helper import resource_file

REAL = Path(__file__).resolve().parents[2] / "fixtures" / "real" / "drbd84"
DISK = DiskConfig(
    resource="web-d0",
    index=0,
    size_mib=64,
    minor=0,
    port=11000,
    volume_group="corral",
    hosts=(
        DrbdPeerConfig(node=NodeName("node1"), address="10.231.1.1", node_id=0),
        DrbdPeerConfig(node=NodeName("node2"), address="10.231.1.2", node_id=1),
    ),
)


def keys_by_kind(text: str) -> dict[str, list[str]]:
    out = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) > 2:
            out[words[1]] = [w.split(":", 1)[0] for w in words[2:]]
    return out


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[dict[str, asyncssh.SSHClientConnection]]:
    lab = await Lab.start(
        hosts=[
            HostConfig(name=n, memory_mib=4096, disk_mib=1024, drbd_version="8.4.11")
            for n in ("node1", "node2")
        ],
        state_dir=tmp_path / "lab",
        control=False,
        sync_rate_mib_s=1.0,
    )
    conns = {}
    for name in ("node1", "node2"):
        conns[name] = await asyncssh.connect(
            "127.0.0.1",
            lab.servers[name].port,
            username="root",  # sets up DRBD with the tools themselves
            client_keys=[str(lab.client_key_path)],
            known_hosts=str(lab.known_hosts_path),
        )
    try:
        yield conns
    finally:
        for c in conns.values():
            c.close()
        await lab.stop()


async def _setup(c: asyncssh.SSHClientConnection, text: str) -> None:
    assert (await c.run("lvcreate -L 64m -n web-d0 corral -y")).exit_status == 0
    await c.run("tee /etc/drbd.d/web-d0.res", input=text)


async def test_84_refuses_node_id_and_json_status_as_the_real_one(
    nodes: dict[str, asyncssh.SSHClientConnection],
) -> None:
    c = nodes["node1"]
    await _setup(c, resource_file(DISK, drbd_major=9))
    refused = await c.run("drbdadm create-md --force web-d0")
    assert refused.exit_status == 10 and "but got 'node-id'" in str(refused.stderr)
    await c.run("tee /etc/drbd.d/web-d0.res", input=resource_file(DISK, drbd_major=8))
    created = await c.run("drbdadm create-md --force web-d0")
    assert created.stdout == (REAL / "create-md.stdout").read_text()
    assert (await c.run("drbdadm up web-d0")).exit_status == 0
    json_status = await c.run("drbdsetup status --json")
    real = (REAL / "status-json.stderr").read_text()
    assert json_status.exit_status == 20
    assert str(json_status.stderr).splitlines()[0] == real.splitlines()[0]
    assert "USAGE: drbdsetup command device arguments options" in str(json_status.stdout)


async def test_84_events2_and_state_refusals_match_the_captures(
    nodes: dict[str, asyncssh.SSHClientConnection],
) -> None:
    for c in nodes.values():
        await _setup(c, resource_file(DISK, drbd_major=8))
        await c.run("drbdadm create-md --force web-d0")
        await c.run("drbdadm up web-d0")
    n1, n2 = nodes["node1"], nodes["node2"]
    assert (await n1.run("drbdadm primary --force web-d0")).exit_status == 0
    for flags, capture in (
        ("", "events2-syncsource.txt"),
        (" --statistics", "events2-syncsource-statistics.txt"),
    ):
        sim = str((await n1.run(f"drbdsetup events2 --now{flags}")).stdout)
        real = (REAL / capture).read_text()
        assert keys_by_kind(sim) == keys_by_kind(real), capture
        assert sim.splitlines()[-1] == "exists -"
    # the peer that events2 names only `peer`, through corral's own probe
    out = str((await n2.run(probe_line(drbd_major=8).line)).stdout)
    snap = parse_probe(out, volume_group="corral", drbd_major=8)
    assert snap.facts.drbd_version == "8.4.11"
    (res,) = snap.drbd
    assert res.peers[0].peer == "node1" and res.peers[0].replication == "SyncTarget"
    # a second primary without allow-two-primaries: the minor and drbdsetup-84
    refused = await n2.run("drbdadm primary web-d0")
    assert refused.exit_status == 11
    assert refused.stderr == (REAL / "primary-refused.stderr").read_text()


async def test_84_cannot_clear_two_primaries_while_both_are_primary(
    nodes: dict[str, asyncssh.SSHClientConnection],
    tmp_path: Path,
) -> None:
    two = resource_file(DISK, drbd_major=8, allow_two_primaries=True)
    for c in nodes.values():
        await _setup(c, two)
        await c.run("drbdadm create-md --force web-d0")
        await c.run("drbdadm up web-d0")
    n1, n2 = nodes["node1"], nodes["node2"]
    # both sides new: skip the initial sync as an operator would not, to reach
    # Primary/Primary without waiting for it
    assert (await n1.run("drbdadm primary --force web-d0")).exit_status == 0
    assert (await n2.run("drbdadm primary --force web-d0")).exit_status == 0
    single = resource_file(DISK, drbd_major=8)
    await n1.run("tee /etc/drbd.d/web-d0.res", input=single)
    refused = await n1.run("drbdadm adjust web-d0")
    real = (REAL / "adjust-single-while-dual.stderr").read_text()
    assert refused.exit_status == 1
    assert str(refused.stderr).splitlines()[:2] == real.splitlines()[:2]
    # the kernel kept allowing two primaries: demote first, then adjust
    assert (await n2.run("drbdadm secondary web-d0")).exit_status == 0
    assert (await n1.run("drbdadm adjust web-d0")).exit_status == 0
