"""A lab of simulated hosts in its own process (`python -m simulators.lab_process`,
what `corral sim up` runs), for scale benches: the orchestrator and the simulator
each get a core of their own, and each one's CPU time is measured apart. Looks
to `Cluster` like an in-process `Lab` where it needs to (ports, keys, the
control port); what the hosts run is asked of its control API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from devtools.local_etcd import LocalEtcd
from events.store import EventStore
from reactors.context import ReactorSettings
from simulators.lab import HostConfig, Lab
from tests.support.cluster.cluster_harness import FAST, Cluster


@dataclass
class RemoteLab:
    process: subprocess.Popen[bytes]
    state_dir: Path
    inventory: dict[str, Any]

    @property
    def servers(self) -> dict[str, Any]:
        return {
            n["name"]: SimpleNamespace(
                port=n["port"],
                host=SimpleNamespace(
                    name=n["name"],
                    memory_mib=n["memory_mib"],
                    vg_size_mib=n["disk_mib"],
                    cpus=n["cpus"],
                ),
            )
            for n in self.inventory["nodes"]
        }

    @property
    def control_port(self) -> int:
        return int(str(self.inventory["control_url"]).rsplit(":", 1)[1])

    @property
    def known_hosts_path(self) -> Path:
        return Path(self.inventory["known_hosts"])

    @property
    def client_key_path(self) -> Path:
        return Path(self.inventory["client_key"])

    def _call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.inventory['control_url']}{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            method="POST" if body is not None else "GET",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return cast(dict[str, Any], json.loads(response.read()))

    async def status(self) -> dict[str, Any]:
        """Power, VMs and isolation of every host, as the lab itself says."""
        return (await asyncio.to_thread(self._call, "/status"))["nodes"]  # type: ignore[no-any-return]

    async def crash(self, name: str) -> None:
        await asyncio.to_thread(self._call, "/fault", {"kind": "crash", "node": name})

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_remote_lab(hosts: list[HostConfig], state_dir: Path, *, sync_rate: float) -> RemoteLab:
    state_dir.mkdir(parents=True, exist_ok=True)
    inventory = state_dir / "inventory.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.lab_process",
            "--state-dir",
            str(state_dir),
            "--hosts",
            json.dumps([asdict(h) for h in hosts]),
            "--sync-rate",
            str(sync_rate),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(state_dir / "lab.log", "wb"),  # noqa: SIM115 (kept for the process)
    )
    deadline = time.monotonic() + 300
    while not (state_dir / "lab.pid").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the lab did not start; see {state_dir / 'lab.log'}")
        time.sleep(0.2)
    return RemoteLab(
        process=process, state_dir=state_dir, inventory=json.loads(inventory.read_text())
    )


def process_cpu_seconds() -> float:
    usage = os.times()
    return usage.user + usage.system


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@asynccontextmanager
async def remote_cluster(
    tmp: Path,
    *,
    hosts: list[HostConfig],
    settings: ReactorSettings = FAST,
    sync_rate_mib_s: float = 200_000,
) -> AsyncIterator[tuple[Cluster, RemoteLab]]:
    """A Cluster whose hosts are simulated in another process."""
    etcd = LocalEtcd(data_dir=tmp / "etcd", tls=True).start()
    lab = await asyncio.to_thread(start_remote_lab, hosts, tmp / "lab", sync_rate=sync_rate_mib_s)
    try:
        async with EventStore.connect(
            [etcd.endpoint], "lab", credentials=etcd.credentials()
        ) as store:
            c = Cluster(
                etcd=etcd,
                lab=cast(Lab, lab),
                store=store,
                engine=None,
                settings=settings,
                tmp=tmp,
            )
            try:
                yield c, lab
            finally:
                await c.stop_engine()
    finally:
        lab.stop()
        etcd.stop()
