"""Leadership handover: three real `corral serve` processes against one etcd and a
simulated lab (3 nodes, 4 instances, in a process of its own as `corral sim up`
runs it); the leader is killed with SIGKILL (no goodbye: its lease has to
expire) and the time to the new leader's first reconcile pass is measured, 20
times (the killed one is started again as a standby each time). Also the time to
the election itself (the new leader key's `since`). The lease TTL is the
default `corral serve --lease-ttl` (5 s) and goes beside the figures."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.local_etcd import LocalEtcd
from devtools.orchestrators import ServeProcess, first_reconcile_after, serve_env
from events.election import LeaderRecord, read_leadership
from events.store import EventStore
from orchestrator.heal_timeline import percentile
from tests.support.cluster.lab_files import lab_cluster_yaml

TTL_S = 5
HANDOVERS = 20
CORRAL = [sys.executable, "-m", "orchestrator.cli.main"]


def _corral(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([*CORRAL, *args], capture_output=True, text=True, timeout=180, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"corral {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


async def _settled(
    store: EventStore, procs: dict[str, ServeProcess], *, timeout: float
) -> LeaderRecord:
    """Once one of ours leads and has reconciled in its term, and the other two
    are registered as standbys: the leader's record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader, members = await read_leadership(store)
        if (
            leader is not None
            and leader.member.id in procs
            and procs[leader.member.id].running()
            and {m.id for m in members} >= set(procs)
            and any(f.term == leader.term for f in procs[leader.member.id].first_reconciles())
        ):
            return leader
        await asyncio.sleep(0.1)
    raise TimeoutError("no settled leader with two standbys")


async def _handovers(store: EventStore, procs: dict[str, ServeProcess]) -> list[dict[str, Any]]:
    rows = []
    for i in range(HANDOVERS):
        old = await _settled(store, procs, timeout=60)
        victim = procs[old.member.id]
        killed = time.time()
        victim.kill()
        others = [p for p in procs.values() if p is not victim]
        deadline = time.monotonic() + TTL_S + 60
        first = None
        while first is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            first = first_reconcile_after(others, term=old.term)
        if first is None:
            raise TimeoutError(f"handover {i + 1}: no new leader reconciled")
        new, _ = await read_leadership(store)
        elected = (new.since - killed) if new is not None and new.term > old.term else None
        row = {
            "killed": old.member.id,
            "new_leader": first.member,
            "old_term": old.term,
            "new_term": first.term,
            "elected_s": round(elected, 3) if elected is not None else None,
            "first_reconcile_s": round(first.at - killed, 3),
        }
        print(f"  handover {i + 1:2d}: {row}", flush=True)
        rows.append(row)
        victim.start()  # back as a standby
    return rows


async def _measure(etcd: LocalEtcd, procs: dict[str, ServeProcess]) -> list[dict[str, Any]]:
    async with EventStore.connect(
        [etcd.endpoint], "lab", credentials=etcd.credentials("auditor")
    ) as store:
        rows = await _handovers(store, procs)
        await _settled(store, procs, timeout=60)
        return rows


def _run(tmp: Path) -> dict[str, Any]:
    lab_dir = tmp / "lab"
    _corral("sim", "up", "--nodes", "3", "--state-dir", str(lab_dir))
    etcd = LocalEtcd(data_dir=tmp / "etcd", tls=True).start()
    procs: dict[str, ServeProcess] = {}
    try:
        inventory_path = lab_dir / "inventory.json"
        inventory = json.loads(inventory_path.read_text())
        env = serve_env(etcd.client_env("orchestrator"), cluster="lab")
        for node in ("node1", "node2", "node3"):
            name = f"orch-{node}"
            procs[name] = ServeProcess(
                name=name,
                args=("--lab", str(inventory_path), "--lease-ttl", str(TTL_S)),
                env=env,
                log_path=tmp / f"{name}.log",
            )
            procs[name].start()
        f = tmp / "cluster.yaml"
        f.write_text(
            lab_cluster_yaml(
                inventory,
                instances="".join(
                    f"  - name: vm{i}\n    memory: 512M\n    vcpus: 1\n    disks: [10G]\n"
                    for i in range(4)
                ),
            )
        )
        alice = serve_env(etcd.client_env("alice"), cluster="lab")
        _corral("apply", "-f", str(f), "--wait", "--timeout", "120", env=alice)
        rows = asyncio.run(_measure(etcd, procs))
        status = json.loads(_corral("sim", "status", "--state-dir", str(lab_dir), "--json"))
        vms = sorted(v for n in status["nodes"].values() for v in n["vms"])
    finally:
        for p in procs.values():
            p.stop()
        etcd.stop()
        subprocess.run(
            [*CORRAL, "sim", "down", "--state-dir", str(lab_dir)], capture_output=True, timeout=60
        )
    return {"rows": rows, "vms_running_after": vms}


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        r = _run(Path(tmp))
    rows = r["rows"]
    handover = [float(x["first_reconcile_s"]) for x in rows]
    elected = [float(x["elected_s"]) for x in rows if x["elected_s"] is not None]
    once = r["vms_running_after"] == [f"vm{i}" for i in range(4)]
    table: list[list[Any]] = [
        ["leader kill -9 ->", "p50 s", "max s", "handovers", "lease TTL s"],
        [
            "new leader elected",
            round(percentile(elected, 50), 2),
            round(max(elected), 2),
            len(elected),
            TTL_S,
        ],
        [
            "its first reconcile",
            round(percentile(handover, 50), 2),
            round(max(handover), 2),
            len(handover),
            TTL_S,
        ],
    ]
    return {
        "lease_ttl_s": TTL_S,
        "handovers": len(rows),
        "first_reconcile_p50_s": round(percentile(handover, 50), 3),
        "first_reconcile_max_s": round(max(handover), 3),
        "elected_p50_s": round(percentile(elected, 50), 3),
        "elected_max_s": round(max(elected), 3),
        "every_instance_running_once_after": once,
        "rows": rows,
        "table": table,
    }
