"""The local etcd the tests and the demo start: healthy, restartable, on other
ports when one is taken, and a release without a known loss of committed writes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from devtools.local_etcd import (
    UNPACKED_ETCD,
    LocalEtcd,
    _etcd_candidates,
    etcd_binary_version,
    find_etcd_binary,
)
from events.etcd_versions import parse_version, version_problem
from events.store import EventStore


def test_local_etcd_starts_healthy_and_restarts(etcd: LocalEtcd) -> None:
    assert etcd.healthy()
    etcd.kill()
    assert not etcd.healthy()
    etcd.restart()
    assert etcd.healthy()


def test_a_port_taken_before_etcd_binds_it_starts_on_other_ports(tmp_path: Path) -> None:
    # Another process binds the client port between picking and etcd's start.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        server = LocalEtcd(data_dir=tmp_path / "etcd", tls=True, client_port=taken).start()
        try:
            assert server.client_port != taken
            assert server.healthy()
            assert server.log_path is not None
            assert b"address already in use" in server.log_path.read_bytes()
        finally:
            server.stop()


async def test_the_store_knows_the_release_it_talks_to(etcd: LocalEtcd) -> None:
    """The release corral checks (`corral serve` warns on one that can lose
    committed writes) is the server's own, and the etcd the tests start is one
    without a known loss when Debian's etcd could be unpacked."""
    async with EventStore.connect(
        [etcd.endpoint], "c1", credentials=etcd.credentials("alice")
    ) as s:
        assert s.server_version == etcd_binary_version(find_etcd_binary())
        assert parse_version(s.server_version) is not None
    if os.access(UNPACKED_ETCD, os.X_OK) and not os.environ.get("CORRAL_ETCD_BIN"):
        assert version_problem(s.server_version) == ""


def test_a_release_that_loses_writes_is_not_picked_when_another_is_there() -> None:
    if os.environ.get("CORRAL_ETCD_BIN"):
        pytest.skip("$CORRAL_ETCD_BIN names the etcd to use")
    found = _etcd_candidates()
    safe = [b for b in found if not version_problem(etcd_binary_version(b))]
    if not safe:
        pytest.skip(f"no etcd without a known loss here: {found}")
    assert find_etcd_binary() == safe[0]
