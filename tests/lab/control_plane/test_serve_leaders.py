"""Several `corral serve` processes against one cluster, as an operator runs
them: `corral cluster leader` and /metrics name one leader and the standbys; the
leader killed with SIGKILL is replaced within its lease; a leader stopped with
SIGSTOP past its lease is replaced, and when it runs again it writes nothing and
runs nothing on the nodes (the term guard). Checked from etcd's own history of
the leader key."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devtools.local_etcd import LocalEtcd
from events.store import EventStore
from tests.support.chaos.terms import deposed_writes, term_history
from tests.support.cluster.lab_files import lab_cluster_yaml

CORRAL = [sys.executable, "-m", "orchestrator.cli.main"]
TTL = 3


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def leading(port: int) -> bool | None:
    try:
        text = metrics(port)
    except OSError:
        return None
    return any(
        line.startswith("corral_leader{") and line.endswith(" 1.0") for line in text.splitlines()
    )


@contextmanager
def lab(tmp: Path) -> Iterator[Path]:
    state = tmp / "lab"
    up = subprocess.run(
        [*CORRAL, "sim", "up", "--nodes", "3", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stderr
    try:
        yield state
    finally:
        subprocess.run(
            [*CORRAL, "sim", "down", "--state-dir", str(state)], capture_output=True, timeout=60
        )


def wait(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_leader_killed_or_stopped_is_replaced_and_writes_nothing(tmp_path: Path) -> None:
    etcd = LocalEtcd(data_dir=tmp_path / "etcd", tls=True).start()
    procs: dict[str, subprocess.Popen[str]] = {}
    ports: dict[str, int] = {}
    try:
        with lab(tmp_path) as state:
            env = {**os.environ, **etcd.client_env("orchestrator"), "CORRAL_CLUSTER": "lab"}

            def serve(name: str) -> None:
                ports[name] = free_port()
                procs[name] = subprocess.Popen(
                    [
                        *CORRAL,
                        "serve",
                        "--lab",
                        str(state / "inventory.json"),
                        "--name",
                        name,
                        "--lease-ttl",
                        str(TTL),
                        "--api",
                        f"127.0.0.1:{ports[name]}",
                        "--public-metrics",
                        "--probe-interval",
                        "0.3",
                        "--log-format",
                        "json",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )

            def leader_now() -> dict[str, Any]:
                out = subprocess.run(
                    [*CORRAL, "cluster", "leader", "--json"],
                    env={**os.environ, **etcd.client_env("auditor"), "CORRAL_CLUSTER": "lab"},
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                assert out.returncode == 0, out.stderr
                return dict(json.loads(out.stdout))

            inventory = json.loads((state / "inventory.json").read_text())
            f = tmp_path / "cluster.yaml"
            f.write_text(
                lab_cluster_yaml(
                    inventory,
                    instances="".join(
                        f"  - name: vm{i}\n    memory: 512M\n    vcpus: 1\n    disks: [10G]\n"
                        for i in range(4)
                    ),
                )
            )
            for name in ("a", "b"):
                serve(name)
            applied = subprocess.run(
                [*CORRAL, "apply", "-f", str(f), "--wait", "--timeout", "90"],
                env={**os.environ, **etcd.client_env("alice"), "CORRAL_CLUSTER": "lab"},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert applied.returncode == 0, applied.stdout + applied.stderr
            wait("a leader and a standby", lambda: len(leader_now()["standbys"]) == 1, 30)
            first = leader_now()
            lead = first["leader"]
            assert isinstance(lead, dict)
            old = str(lead["id"])
            other = "b" if old == "a" else "a"
            assert [s["id"] for s in first["standbys"]] == [other]
            wait("metrics", lambda: leading(ports[old]) is True, 20)
            assert leading(ports[other]) is False
            text = subprocess.run(
                [*CORRAL, "cluster", "leader"],
                env={**os.environ, **etcd.client_env("auditor"), "CORRAL_CLUSTER": "lab"},
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            assert f"leader    {old} " in text and f"term {lead['term']}" in text

            # kill -9: the standby leads within the lease (plus a little).
            procs[old].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            wait("the standby leads", lambda: leading(ports[other]) is True, TTL + 10)
            assert time.monotonic() - killed < TTL + 5
            second = leader_now()["leader"]
            assert isinstance(second, dict) and second["id"] == other
            assert int(second["term"]) > int(lead["term"])

            # A third orchestrator; then the leader stalls past its lease.
            serve("c")
            wait("c stands by", lambda: leading(ports["c"]) is False, 30)
            procs[other].send_signal(signal.SIGSTOP)
            wait("c leads", lambda: leading(ports["c"]) is True, TTL + 10)
            time.sleep(1.0)
            procs[other].send_signal(signal.SIGCONT)  # it wakes up believing it leads
            wait(
                "the stalled one knows it does not lead", lambda: leading(ports[other]) is False, 10
            )
            time.sleep(TTL)
            assert leading(ports["c"]) is True
            third = leader_now()["leader"]
            assert isinstance(third, dict) and third["id"] == "c"

            async def check() -> tuple[list[str], list[str]]:
                async with EventStore.connect(
                    [etcd.endpoint], "lab", credentials=etcd.credentials("auditor")
                ) as store:
                    terms = await term_history(store)
                    return [t.member for t in terms], await deposed_writes(store)

            members, bad = asyncio.run(check())
            assert members[:3] == [old, other, "c"]
            assert bad == []
            # The cluster stayed whole: every instance runs once.
            status = subprocess.run(
                [*CORRAL, "sim", "status", "--state-dir", str(state), "--json"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            vms = [v for n in json.loads(status.stdout)["nodes"].values() for v in n["vms"]]
            assert sorted(vms) == [f"vm{i}" for i in range(4)]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(timeout=10)
        etcd.stop()
