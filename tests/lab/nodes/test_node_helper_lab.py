"""The node helper behind real SSH, as the orchestrator reaches it: the corral
account runs the helper and nothing else as root; steps carry the leader's term
and a node that has seen a newer one refuses them as a clear step failure with
nothing changed, alone, in a batch and in a running engine; batches come back per
group; the steps bound for one node at once go in one batch (one round trip),
each step's failure its own; and one pooled connection per node carries
concurrent channels."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from events.ids import InstanceName, NodeName
from events.model import InstanceDeclared, StepFailed
from events.specs import DiskSpec, InstanceSpec, NodeSpec
from reactors.nodes.commands import HelperRequest, drbdadm
from reactors.nodes.ssh_ops import SshNodeOps
from reactors.plans.steps import DiskConfig, DrbdPeerConfig, Step, StepKind
from simulators.fabric import CommandFault
from simulators.lab import HostConfig, Lab
from simulators.node_helper import HELPER_PATH
from tests.support.cluster.cluster_harness import cluster, eid

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = await Lab.start(
        hosts=[
            HostConfig(name="node1", memory_mib=4096, disk_mib=20480),
            HostConfig(name="node2", memory_mib=4096, disk_mib=20480),
        ],
        state_dir=tmp_path / "lab",
        control=False,
    )
    try:
        yield lab
    finally:
        await lab.stop()


def ops_for(lab: Lab, term: int | None) -> SshNodeOps:
    assert lab.known_hosts_path is not None and lab.client_key_path is not None
    ops = SshNodeOps(known_hosts=lab.known_hosts_path, client_key=lab.client_key_path)
    ops.update_nodes(
        {
            NodeName(name): NodeSpec(
                name=NodeName(name),
                address="127.0.0.1",
                port=server.port,
                memory_mib=4096,
                disk_mib=20480,
                cpus=8,
            )
            for name, server in lab.servers.items()
        }
    )
    if term is not None:
        ops.set_term(term)
    return ops


def disk(name: str, minor: int) -> DiskConfig:
    return DiskConfig(
        resource=name,
        index=0,
        size_mib=256,
        minor=minor,
        port=11000 + minor,
        volume_group="corral",
        hosts=(
            DrbdPeerConfig(node=NodeName("node1"), address="127.0.0.1", node_id=0),
            DrbdPeerConfig(node=NodeName("node2"), address="127.0.0.1", node_id=1),
        ),
    )


def step(kind: StepKind, d: DiskConfig) -> Step:
    return Step(kind=kind, node=NodeName("node1"), instance=InstanceName("web"), disk=d)


async def test_the_corral_account_runs_the_helper_and_nothing_else_as_root(lab: Lab) -> None:
    assert lab.known_hosts_path is not None and lab.client_key_path is not None
    async with asyncssh.connect(
        "127.0.0.1",
        lab.servers["node1"].port,
        username="corral",
        client_keys=[str(lab.client_key_path)],
        known_hosts=str(lab.known_hosts_path),
    ) as conn:
        for line in ("sudo -n id", "sudo -n lvcreate -L 64m -n web-d0 corral -y"):
            done = await conn.run(line)
            assert (done.exit_status, done.stderr) == (1, "sudo: a password is required\n")
        done = await conn.run("lvcreate -L 64m -n web-d0 corral -y")
        assert done.exit_status == 1 and "Permission denied" in str(done.stderr)
        done = await conn.run(f"sudo -n {HELPER_PATH} lv-create --term 1 corral 'x;id' 64")
        assert done.exit_status == 64 and "not a corral disk name" in str(done.stderr)
        assert lab.host("node1").volumes == {}
        done = await conn.run(f"sudo -n {HELPER_PATH} lv-create --term 1 corral web-d0 64")
        assert done.exit_status == 0, done.stderr
        assert lab.host("node1").volumes["web-d0"].size_mib == 64


async def test_steps_carry_the_term_and_a_stale_one_is_a_clear_failure(lab: Lab) -> None:
    leader, deposed, none = ops_for(lab, 5), ops_for(lab, 3), ops_for(lab, None)
    try:
        web = disk("web-d0", 1)
        done = await leader.execute(step(StepKind.CREATE_DISK, web))
        assert done.ok, done.error
        host = lab.host("node1")
        assert host.files["/var/lib/corral/term"] == b"5\n"
        assert host.copies["web-d0"].up

        # A batch (create-disk's four requests), a single verb, a grow (two nodes).
        db = disk("db-d0", 2)
        for ops, why in ((deposed, "stale term"), (none, "no leader term")):
            for s in (
                step(StepKind.CREATE_DISK, db),
                step(StepKind.DRBD_INITIAL_PRIMARY, web),
                step(StepKind.REMOVE_DISK, web),
            ):
                outcome = await ops.execute(s)
                assert not outcome.ok and why in outcome.error, outcome
        assert sorted(host.volumes) == ["web-d0"]
        assert host.copies["web-d0"].role == "Secondary" and host.copies["web-d0"].up
        assert "/etc/drbd.d/db-d0.res" not in host.files
        assert host.files["/var/lib/corral/term"] == b"5\n"

        outcome = await leader.execute(step(StepKind.DRBD_INITIAL_PRIMARY, web))
        assert outcome.ok and host.copies["web-d0"].role == "Primary"
    finally:
        for ops in (leader, deposed, none):
            await ops.close()


async def test_a_batch_answers_per_group_and_stops_a_group_at_its_failure(lab: Lab) -> None:
    ops = ops_for(lab, 2)
    try:
        lv = HelperRequest(verb="lv-create", args=("corral", "a-d0", "64"), summary="a")
        results = await ops.batch(
            NodeName("node1"),
            [
                ("first", [lv, lv, drbdadm("up", "a-d0")]),
                ("second", [HelperRequest(verb="lv-create", args=("corral", "b-d0", "64"))]),
            ],
        )
        assert [[r.rc for r in group] for group in results] == [[0, 5, None], [0]]
        assert "already exists" in results[0][1].stderr
        assert sorted(lab.host("node1").volumes) == ["a-d0", "b-d0"]
    finally:
        await ops.close()


async def test_steps_bound_for_a_node_at_once_go_in_one_round_trip(lab: Lab) -> None:
    ops = ops_for(lab, 5)
    try:
        await ops.probe(NodeName("node1"))  # its DRBD version, as the engine knows it
        before = ops.commands_run
        disks = [disk(f"vm{n}-d0", n) for n in range(1, 6)]
        outcomes = await asyncio.gather(
            *(ops.execute(step(StepKind.CREATE_DISK, d)) for d in disks),
            # Fails on the node (no such resource): alone, the others go on.
            ops.execute(step(StepKind.DRBD_INITIAL_PRIMARY, disk("gone-d0", 9))),
        )
        assert ops.commands_run - before == 1
        assert [o.ok for o in outcomes] == [True] * 5 + [False], outcomes
        assert "drbd-primary" in outcomes[-1].error or "gone-d0" in outcomes[-1].error
        host = lab.host("node1")
        assert sorted(host.volumes) == [f"vm{n}-d0" for n in range(1, 6)]
        assert all(host.copies[f"vm{n}-d0"].up for n in range(1, 6))

        # A batch the helper refuses whole as invalid is sent again step by step:
        # only the invalid request fails.
        before = ops.commands_run
        good = HelperRequest(verb="lv-create", args=("corral", "ok-d0", "64"))
        bad = HelperRequest(verb="lv-create", args=("corral", "x;id", "64"))
        results = await asyncio.gather(
            ops.batcher.submit(NodeName("node1"), [good]),
            ops.batcher.submit(NodeName("node1"), [bad]),
        )
        assert [r[0].rc for r in results] == [0, 64]
        assert "not a corral disk name" in results[1][0].stderr
        assert ops.commands_run - before == 3
        assert "ok-d0" in host.volumes and "x;id" not in host.volumes
    finally:
        await ops.close()


async def test_one_connection_per_node_carries_concurrent_channels(lab: Lab) -> None:
    ops = ops_for(lab, 1)
    server = lab.servers["node1"]
    lab.add_fault("node1", CommandFault(match=f"{HELPER_PATH} probe", kind="slow", seconds=0.5))
    try:
        snaps = await asyncio.gather(*(ops.probe(NodeName("node1")) for _ in range(12)))
        assert {s.facts.hostname for s in snaps} == {"node1"}
        assert server.connections_accepted == 1
        # Several sessions ran at once on that connection, never more than the limit.
        assert 2 <= server.max_in_flight <= ops.per_node_limit
    finally:
        await ops.close()


async def test_an_engine_whose_term_a_node_has_passed_changes_nothing_there(
    tmp_path: Path,
) -> None:
    """A newer leader has reached node1 and node2 (a term above any etcd revision
    this test reaches); this engine's term is older: every step it sends them fails
    as a stale term, recorded as such, and the nodes hold nothing of the instance
    it tried to create."""
    hosts = [HostConfig(name="node1"), HostConfig(name="node2")]
    async with cluster(tmp_path, hosts=hosts) as c:
        await c.declare_nodes(fence=False)
        for host in c.lab.fabric.hosts.values():
            host.files["/var/lib/corral/term"] = b"1000000000\n"
        spec = InstanceSpec(
            name=InstanceName("web"), memory_mib=512, vcpus=1, disks=(DiskSpec(size_mib=1024),)
        )
        await c.declare([InstanceDeclared(id=eid(), time=time.time(), actor="test", spec=spec)])
        engine = await c.start_engine()

        def refused() -> bool:
            record = engine.state.last_steps.get("instance/web")
            return record is not None and record.failures_in_a_row >= 2

        await c.wait_for("steps refused as a stale term", refused, timeout=60)
        record = engine.state.last_steps["instance/web"]
        assert record.ok is False and record.step == "create-disk", record
        assert "stale term" in record.error, record
        assert re.search(r"term \d+ is older than term 1000000000, the newest", record.error)
        failed = [e async for _, e in c.store.read_all() if isinstance(e, StepFailed)]
        assert failed and all("stale term" in e.error for e in failed)
        for host in c.lab.fabric.hosts.values():
            assert host.volumes == {} and host.copies == {} and host.vms == {}
            assert host.files["/var/lib/corral/term"] == b"1000000000\n"
