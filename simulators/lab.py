"""A lab of simulated hosts: starts one SSH server per host on loopback ports,
generates host keys and a client key, writes the inventory (JSON), a known_hosts
file and the client key into a state dir, and serves a small control API (JSON
over HTTP on loopback) for faults and power, which the fence agent uses.

Imports nothing from corral's own packages.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from aiohttp import web

from simulators.fabric import CommandFault, Fabric, Host
from simulators.ssh_server import HostServer


@dataclass(frozen=True)
class HostConfig:
    name: str
    memory_mib: int = 24 * 1024
    disk_mib: int = 730 * 1024
    cpus: int = 8
    vg: str = "corral"
    drbd_version: str = "9.2.5"


def seed_hosts(
    count: int = 4, *, memory_mib: int = 24 * 1024, disk_mib: int = 730 * 1024, cpus: int = 8
) -> list[HostConfig]:
    return [
        HostConfig(name=f"node{i + 1}", memory_mib=memory_mib, disk_mib=disk_mib, cpus=cpus)
        for i in range(count)
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    state_dir: Path
    fabric: Fabric = field(default_factory=Fabric)
    servers: dict[str, HostServer] = field(default_factory=dict)
    client_key_path: Path | None = None
    known_hosts_path: Path | None = None
    control_port: int = 0
    cluster: str = "lab"
    _runner: web.AppRunner | None = None

    @classmethod
    async def start(
        cls,
        *,
        hosts: list[HostConfig],
        state_dir: Path,
        sync_rate_mib_s: float = 1000.0,
        control: bool = True,
        cluster: str = "lab",
    ) -> Lab:
        state_dir.mkdir(parents=True, exist_ok=True)
        lab = cls(state_dir=state_dir, cluster=cluster)
        lab.fabric.sync_rate_mib_s = sync_rate_mib_s
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        lab.client_key_path = state_dir / "client_key"
        client_key.write_private_key(str(lab.client_key_path))
        lab.client_key_path.chmod(0o600)
        authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
        known = []
        for cfg in hosts:
            host = lab.fabric.add_host(
                Host(
                    name=cfg.name,
                    cpus=cfg.cpus,
                    memory_mib=cfg.memory_mib,
                    vg_name=cfg.vg,
                    vg_size_mib=cfg.disk_mib,
                    drbd_version=cfg.drbd_version,
                )
            )
            key = asyncssh.generate_private_key("ssh-ed25519")
            server = HostServer(
                fabric=lab.fabric,
                host=host,
                host_key=key,
                authorized=authorized,
                port=_free_port(),
            )
            await server.start()
            lab.servers[cfg.name] = server
            known.append(f"[127.0.0.1]:{server.port} {key.export_public_key().decode().strip()}")
        lab.known_hosts_path = state_dir / "known_hosts"
        lab.known_hosts_path.write_text("\n".join(known) + "\n")
        if control:
            await lab._start_control()
        lab.write_inventory()
        return lab

    # ---------------------------------------------------------------- inventory

    def inventory(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "known_hosts": str(self.known_hosts_path),
            "client_key": str(self.client_key_path),
            "control_url": f"http://127.0.0.1:{self.control_port}" if self.control_port else None,
            "nodes": [
                {
                    "name": name,
                    "address": "127.0.0.1",
                    "port": server.port,
                    "replication_address": "127.0.0.1",
                    "memory_mib": server.host.memory_mib,
                    "disk_mib": server.host.vg_size_mib,
                    "cpus": server.host.cpus,
                    "volume_group": server.host.vg_name,
                }
                for name, server in self.servers.items()
            ],
        }

    def write_inventory(self) -> Path:
        path = self.state_dir / "inventory.json"
        path.write_text(json.dumps(self.inventory(), indent=2) + "\n")
        return path

    def host(self, name: str) -> Host:
        return self.fabric.hosts[name]

    # ---------------------------------------------------------------- faults

    async def power_off(self, name: str) -> None:
        self.fabric.power_off(name)
        await self.servers[name].stop()

    async def power_on(self, name: str) -> None:
        self.fabric.power_on(name)
        if name not in self.fabric.isolated_from_orchestrator:
            await self.servers[name].start()

    async def crash(self, name: str) -> None:
        await self.power_off(name)

    async def partition(self, name: str, *, from_orchestrator: bool, from_peers: bool) -> None:
        if from_orchestrator:
            self.fabric.isolated_from_orchestrator.add(name)
            await self.servers[name].stop()
        if from_peers:
            for other in self.fabric.hosts:
                if other != name:
                    self.fabric.cut_pairs.add(frozenset((name, other)))
        self.fabric.tick()

    async def heal_partition(self, name: str) -> None:
        self.fabric.isolated_from_orchestrator.discard(name)
        self.fabric.cut_pairs = {p for p in self.fabric.cut_pairs if name not in p}
        if self.fabric.hosts[name].powered:
            await self.servers[name].start()
        self.fabric.tick()

    def cut_link(self, a: str, b: str) -> None:
        self.fabric.cut_pairs.add(frozenset((a, b)))
        self.fabric.tick()

    def restore_link(self, a: str, b: str) -> None:
        self.fabric.cut_pairs.discard(frozenset((a, b)))
        self.fabric.tick()

    def add_fault(self, host: str, fault: CommandFault) -> None:
        self.fabric.command_faults.setdefault(host, []).append(fault)

    # ---------------------------------------------------------------- control API

    async def _start_control(self) -> None:
        app = web.Application()
        app.router.add_post("/power", self._power)
        app.router.add_get("/status", self._status)
        app.router.add_post("/fault", self._fault)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.control_port = _free_port()
        site = web.TCPSite(self._runner, "127.0.0.1", self.control_port)
        await site.start()

    async def _power(self, request: web.Request) -> web.Response:
        body = await request.json()
        name, action = body.get("node"), body.get("action")
        if name not in self.fabric.hosts:
            return web.json_response({"error": f"no node {name!r}"}, status=404)
        if action == "off":
            await self.power_off(name)
        elif action == "on":
            await self.power_on(name)
        elif action == "reboot":
            await self.power_off(name)
            await self.power_on(name)
        elif action != "status":
            return web.json_response({"error": f"unknown action {action!r}"}, status=400)
        return web.json_response(
            {"node": name, "power": "on" if self.host(name).powered else "off"}
        )

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "nodes": {
                    n: {
                        "power": "on" if h.powered else "off",
                        "vms": sorted(h.vms),
                        "isolated": n in self.fabric.isolated_from_orchestrator,
                    }
                    for n, h in self.fabric.hosts.items()
                }
            }
        )

    async def _fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        kind, node = body.get("kind"), body.get("node")
        if node not in self.fabric.hosts:
            return web.json_response({"error": f"no node {node!r}"}, status=404)
        if kind == "crash":
            await self.crash(node)
        elif kind == "partition":
            await self.partition(
                node,
                from_orchestrator=bool(body.get("from_orchestrator", True)),
                from_peers=bool(body.get("from_peers", False)),
            )
        elif kind == "heal":
            await self.heal_partition(node)
        elif kind == "kill-vm":
            self.fabric.kill_vm(node, str(body.get("vm")))
        elif kind in ("cut-link", "restore-link"):
            peer = body.get("peer")
            if peer not in self.fabric.hosts or peer == node:
                return web.json_response({"error": f"no peer node {peer!r}"}, status=400)
            if kind == "cut-link":
                self.cut_link(node, str(peer))
            else:
                self.restore_link(node, str(peer))
        elif kind == "fail-disk":
            res = str(body.get("resource", ""))
            if res not in self.host(node).copies:
                return web.json_response(
                    {"error": f"node {node!r} has no DRBD resource {res!r}"}, status=400
                )
            self.fabric.fail_disk(node, res)
        elif kind in ("fail-command", "slow-command", "hang-command"):
            try:
                nth = int(body.get("nth", 0))
                seconds = float(body.get("seconds", 0.0))
            except (TypeError, ValueError):
                return web.json_response({"error": "nth and seconds must be numbers"}, status=400)
            match = str(body.get("match", ""))
            if not match or nth < 0 or seconds < 0:
                return web.json_response(
                    {"error": "a command fault needs match (non-empty), nth >= 0, seconds >= 0"},
                    status=400,
                )
            self.add_fault(
                node,
                CommandFault(match=match, kind=kind.split("-")[0], nth=nth, seconds=seconds),
            )
        elif kind == "clear-commands":
            self.fabric.command_faults.pop(node, None)
        else:
            return web.json_response({"error": f"unknown fault {kind!r}"}, status=400)
        return web.json_response({"ok": True})

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
