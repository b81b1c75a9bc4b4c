"""DRBD state parsing for both module versions, against outputs captured from real
node VMs (Debian 6.1 kernel, DRBD 8.4.11, drbd-utils 9.22) under
tests/fixtures/real/drbd84/."""

from __future__ import annotations

from pathlib import Path

import pytest

from events.ids import NodeName
from reactors.nodes.commands import ParseError
from reactors.nodes.drbd_status import (
    drbd_major,
    parse_drbd_events2,
    parse_drbd_version,
    parse_resource_hosts,
    peers_from_hosts,
)
from reactors.nodes.probe import SEPARATOR, DrbdVersionChanged, parse_probe, probe_line
from reactors.plans.steps import DiskConfig, DrbdPeerConfig
from tests.support.nodes.node_helper import resource_file

REAL = Path(__file__).resolve().parents[2] / "fixtures" / "real" / "drbd84"
PEERS = {"web-d0": "node2"}


def events2(name: str) -> str:
    return (REAL / name).read_text()


def test_version_from_proc_drbd() -> None:
    text = (REAL / "proc-drbd-connected.txt").read_text()
    assert parse_drbd_version(text) == "8.4.11"
    assert drbd_major("8.4.11") == 8
    assert parse_drbd_version("version: 9.2.5 (api:2/proto:86-122)\n") == "9.2.5"
    assert parse_drbd_version("") == "" and drbd_major("") == 0


@pytest.mark.parametrize(
    ("name", "role", "disk", "conn", "peer_role", "peer_disk", "replication"),
    [
        ("events2-connecting-inconsistent.txt", "Secondary", "Inconsistent", "Connecting",
         "Unknown", "DUnknown", "Off"),
        ("events2-syncsource.txt", "Primary", "UpToDate", "Connected", "Secondary",
         "Inconsistent", "SyncSource"),
        ("events2-synctarget-statistics.txt", "Secondary", "Inconsistent", "Connected",
         "Primary", "UpToDate", "SyncTarget"),
        ("events2-connected-primary.txt", "Primary", "UpToDate", "Connected", "Secondary",
         "UpToDate", "Established"),
        ("events2-dual-primary.txt", "Primary", "UpToDate", "Connected", "Primary",
         "UpToDate", "Established"),
        ("events2-peer-lost.txt", "Secondary", "UpToDate", "Connecting", "Unknown",
         "DUnknown", "Off"),
    ],
)  # fmt: skip
def test_events2_captures_parse_to_what_the_node_showed(
    name: str,
    role: str,
    disk: str,
    conn: str,
    peer_role: str,
    peer_disk: str,
    replication: str,
) -> None:
    (res,) = parse_drbd_events2(events2(name), peers=PEERS)
    assert (res.name, res.role, res.disk, res.minor) == ("web-d0", role, disk, 0)
    (link,) = res.peers
    assert link.peer == "node2"  # 8.4 calls it `peer`; the resource file names it
    assert (link.connection, link.peer_role, link.peer_disk, link.replication) == (
        conn,
        peer_role,
        peer_disk,
        replication,
    )


def test_resync_progress_from_statistics() -> None:
    (source,) = parse_drbd_events2(events2("events2-syncsource-statistics.txt"), peers=PEERS)
    (target,) = parse_drbd_events2(events2("events2-synctarget-statistics.txt"), peers=PEERS)
    assert source.peers[0].percent_in_sync == pytest.approx(0.1, abs=0.1)
    assert target.peers[0].percent_in_sync == pytest.approx(1.7, abs=0.1)
    # without --statistics a resync under way is not called in sync
    (plain,) = parse_drbd_events2(events2("events2-syncsource.txt"), peers=PEERS)
    assert plain.peers[0].percent_in_sync == 0.0
    (done,) = parse_drbd_events2(events2("events2-connected-primary-statistics.txt"), peers=PEERS)
    assert done.peers[0].percent_in_sync == 100.0


def test_events2_empty_and_unknown_peer() -> None:
    assert parse_drbd_events2(events2("events2-empty.txt"), peers={}) == ()
    (res,) = parse_drbd_events2(events2("events2-peer-lost.txt"), peers={})
    assert res.peers[0].peer == "peer"  # no resource file: never mistaken for a node


def test_events2_garbage_is_a_parse_error() -> None:
    with pytest.raises(ValueError, match="events2"):
        parse_drbd_events2("exists resource name:x role\n", peers={})
    with pytest.raises(ValueError, match="exists"):
        parse_drbd_events2(events2("status-json.stderr"), peers={})


def test_peer_names_from_the_resource_files() -> None:
    grep = (
        "/etc/drbd.d/web-d0.res:  on node1 {\n/etc/drbd.d/web-d0.res:  on node2 {\n"
        "/etc/drbd.d/db-d0.res:  on node3 {\n/etc/drbd.d/db-d0.res:  on node1 {\n"
    )
    hosts = parse_resource_hosts(grep)
    assert hosts == {"web-d0": ("node1", "node2"), "db-d0": ("node3", "node1")}
    assert peers_from_hosts(hosts, me="node1") == {"web-d0": "node2", "db-d0": "node3"}
    assert peers_from_hosts(hosts, me="node2") == {"web-d0": "node1"}


def _probe_text(drbd: str, proc: str, grep: str) -> str:
    vgs = (
        '{"report": [{"vg": [{"vg_name": "corral", "vg_size": "2044.00", "vg_free": "1788.00"}]}]}'
    )
    lvs = '{"report": [{"lv": [{"lv_name": "web-d0", "vg_name": "corral", "lv_size": "256.00"}]}]}'
    parts = ["1\n", "MemTotal: 466000 kB\nMemAvailable: 370000 kB\n", "b0\n", "node1\n",
             vgs + "\n", lvs + "\n", drbd, "", proc, grep]  # fmt: skip
    return (SEPARATOR + "\n").join(parts)


def test_probe_of_an_84_node() -> None:
    text = _probe_text(
        events2("events2-connected-primary-statistics.txt"),
        (REAL / "proc-drbd-connected.txt").read_text().splitlines(keepends=True)[0],
        "/etc/drbd.d/web-d0.res:  on node1 {\n/etc/drbd.d/web-d0.res:  on node2 {\n",
    )
    snap = parse_probe(text, volume_group="corral", drbd_major=8)
    assert snap.facts.drbd_version == "8.4.11"
    assert snap.drbd[0].peers[0].peer == "node2"
    assert snap.drbd[0].peers[0].peer_disk == "UpToDate"
    # the same node probed as if it ran DRBD 9: told to probe again for 8
    with pytest.raises(DrbdVersionChanged) as changed:
        parse_probe(text, volume_group="corral", drbd_major=9)
    assert changed.value.major == 8
    # The helper reads events2 for 8.4 (`probe --drbd84`), status --json for 9.
    assert probe_line(drbd_major=8).line.endswith(" probe --drbd84")
    assert probe_line(drbd_major=9).line.endswith(" probe")


def test_probe_with_a_broken_section_names_the_command() -> None:
    text = _probe_text(
        "exists resource role:Primary\n", "version: 8.4.11 (api:1/proto:86-101)\n", ""
    )
    with pytest.raises(ParseError, match="events2"):
        parse_probe(text, volume_group="corral", drbd_major=8)


DISK = DiskConfig(
    resource="web-d0",
    index=0,
    size_mib=256,
    minor=0,
    port=11000,
    volume_group="corral",
    hosts=(
        DrbdPeerConfig(node=NodeName("node1"), address="10.231.1.1", node_id=0),
        DrbdPeerConfig(node=NodeName("node2"), address="10.231.1.2", node_id=1),
    ),
)


def test_resource_file_per_version() -> None:
    assert "node-id 1;" in resource_file(DISK, drbd_major=9)
    assert "node-id" not in resource_file(DISK, drbd_major=8)
