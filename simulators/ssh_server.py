"""One real asyncssh server per simulated host: public-key auth against one
authorized client key, the host's own host key, exec requests run through
`simulators.shell`, QMP served on the VMs' unix sockets through SSH
direct-streamlocal forwarding (what `conn.open_unix_connection(path)` asks for), and
each VM's VNC display (`-vnc 127.0.0.1:N`) through direct-tcpip forwarding to the
host's loopback port 5900+N, answering as qemu's VNC server begins (RFB 3.8).

A host that is powered off or cut off from the orchestrator stops listening and drops
its connections. Imports nothing from corral's own packages.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from simulators.fabric import Fabric, Host, Vm
from simulators.shell import reads_stdin, run_line

QMP_GREETING = {
    "QMP": {
        "version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"},
        "capabilities": ["oob"],
    }
}


class SerialSession(asyncssh.SSHUNIXSession[bytes]):
    """A VM's serial console (`-serial unix:PATH,server=on`): a getty that echoes
    what is typed and asks for a login again at each Enter."""

    def __init__(self, vm_name: str) -> None:
        self.vm_name = vm_name
        self.chan: asyncssh.SSHUNIXChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHUNIXChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan
        chan.write(f"\r\nDebian GNU/Linux 12 {self.vm_name} ttyS0\r\n\r\n".encode())
        chan.write(f"{self.vm_name} login: ".encode())

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.chan is None:
            return
        for byte in data:
            if byte in (10, 13):
                self.chan.write(f"\r\n{self.vm_name} login: ".encode())
            else:
                self.chan.write(bytes([byte]))


class VncSession(asyncssh.SSHTCPSession[bytes]):
    """qemu's VNC server as a viewer meets it: the RFB 3.8 version line, then, after
    the viewer's, one security type (None)."""

    def __init__(self) -> None:
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan
        chan.write(b"RFB 003.008\n")

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.chan is not None and data.startswith(b"RFB "):
            self.chan.write(b"\x01\x01")


def vnc_port(argv: list[str]) -> int | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == "-vnc" and argv[i + 1].startswith("127.0.0.1:"):
            return 5900 + int(argv[i + 1].split(":", 1)[1].split(",", 1)[0])
    return None


def serial_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == "-serial" and argv[i + 1].startswith("unix:"):
            return argv[i + 1][5:].split(",", 1)[0]
    return None


class QmpSession(asyncssh.SSHUNIXSession[bytes]):
    """QMP as qemu 7.2 speaks it, for one simulated VM."""

    def __init__(self, fabric: Fabric, host: Host, vm_name: str) -> None:
        self.fabric, self.host, self.vm_name = fabric, host, vm_name
        self.chan: asyncssh.SSHUNIXChannel[bytes] | None = None
        self.buffer = b""
        self.negotiated = False

    def connection_made(self, chan: asyncssh.SSHUNIXChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan
        self._send(QMP_GREETING)

    def _send(self, doc: dict[str, Any]) -> None:
        if self.chan is not None:
            self.chan.write(json.dumps(doc).encode() + b"\r\n")

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self._handle(line)

    def _error(self, cls: str, desc: str, ident: Any) -> None:
        doc: dict[str, Any] = {"error": {"class": cls, "desc": desc}}
        if ident is not None:
            doc["id"] = ident
        self._send(doc)

    def _reply(self, ret: Any, ident: Any) -> None:
        doc: dict[str, Any] = {"return": ret}
        if ident is not None:
            doc["id"] = ident
        self._send(doc)

    def _handle(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
            cmd = msg["execute"]
        except (ValueError, KeyError, TypeError):
            self._error("GenericError", "JSON parse error, expecting value", None)
            return
        ident = msg.get("id")
        args = msg.get("arguments") or {}
        vm = self.host.vms.get(self.vm_name)
        if vm is None or not self.host.powered:
            if self.chan is not None:
                self.chan.close()
            return
        if cmd not in ("qmp_capabilities", "query-status", "query-migrate"):
            self.fabric.record(self.host.name, f"qmp {cmd} {self.vm_name}")
        if cmd == "qmp_capabilities":
            self.negotiated = True
            self._reply({}, ident)
            return
        if not self.negotiated:
            self._error(
                "CommandNotFound",
                "Expecting capabilities negotiation with 'qmp_capabilities'",
                ident,
            )
            return
        if cmd == "query-status":
            self._reply(
                {"status": vm.status, "singlestep": False, "running": vm.status == "running"},
                ident,
            )
        elif cmd == "stop":
            vm.status = "paused"
            self._reply({}, ident)
        elif cmd == "cont":
            if vm.status == "inmigrate":
                self._error("GenericError", "Migration is not finalized yet", ident)
                return
            vm.status = "running"
            self._reply({}, ident)
        elif cmd in ("quit", "system_powerdown"):
            self._reply({}, ident)
            self.host.vms.pop(vm.name, None)
            self.host.files.pop(vm.pidfile, None)
            if self.chan is not None:
                self.chan.close()
        elif cmd == "migrate":
            self._migrate(vm, str(args.get("uri", "")), ident)
        elif cmd == "query-migrate":
            if vm.status == "postmigrate":
                self._reply(
                    {
                        "status": "completed",
                        "total-time": 120,
                        "downtime": 8,
                        "ram": {
                            "transferred": vm.memory_mib * 1024 * 1024,
                            "remaining": 0,
                            "total": vm.memory_mib * 1024 * 1024,
                        },
                    },
                    ident,
                )
            elif getattr(vm, "migration_failed", False):
                self._reply({"status": "failed", "error-desc": "target vanished"}, ident)
            else:
                self._reply({}, ident)
        else:
            self._error("CommandNotFound", f"The command {cmd} has not been found", ident)

    def _migrate(self, vm: Vm, uri: str, ident: Any) -> None:
        if not uri.startswith("tcp:"):
            self._error("GenericError", f"Unsupported migration URI '{uri}'", ident)
            return
        address, _, port = uri[4:].rpartition(":")
        found = self.fabric.find_incoming(address, int(port))
        if found is None or not self.fabric.can_talk(self.host.name, found[0].name):
            self._error(
                "GenericError",
                f"Failed to connect to '{address}:{port}': Connection refused",
                ident,
            )
            return
        target_host, target = found
        target.status = "running" if vm.status == "running" else "paused"
        target.incoming = None
        vm.status = "postmigrate"
        self._reply({}, ident)
        del target_host


@dataclass
class HostServer:
    fabric: Fabric
    host: Host
    host_key: asyncssh.SSHKey
    authorized: asyncssh.SSHAuthorizedKeys
    port: int
    listener: asyncssh.SSHAcceptor | None = None
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    # Exec sessions running now, and the most seen at once (tests check that a
    # client's commands share one connection as concurrent channels).
    in_flight: int = 0
    max_in_flight: int = 0
    connections_accepted: int = 0

    async def start(self) -> None:
        if self.listener is not None:
            return
        self.listener = await asyncssh.listen(
            "127.0.0.1",
            self.port,
            server_host_keys=[self.host_key],
            authorized_client_keys=self.authorized,
            server_factory=lambda: _Server(self),
            process_factory=self._handle,
            allow_scp=False,
            encoding=None,
            keepalive_interval=0,
            reuse_address=True,
        )

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
            await self.listener.wait_closed()
            self.listener = None
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()

    def reachable(self) -> bool:
        return self.host.powered and self.host.name not in self.fabric.isolated_from_orchestrator

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._exec(process)
        finally:
            self.in_flight -= 1

    async def _exec(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        stdin = b""
        if reads_stdin(command):
            try:
                stdin = await asyncio.wait_for(process.stdin.read(), 10.0)
            except (TimeoutError, asyncssh.Error):
                stdin = b""
        fault = self.fabric.fault_for(self.host.name, command)
        if fault is not None:
            if fault.kind == "hang":
                await asyncio.sleep(3600)
            elif fault.kind == "slow":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "fail":
                process.stderr.write(f"simulated failure of: {command}\n".encode())
                process.exit(1)
                return
        if not self.reachable():
            process.exit(255)
            return
        self.fabric.record(self.host.name, command)
        user = str(process.get_extra_info("username") or "corral")
        result = run_line(self.fabric, self.host, command, stdin, user=user)
        if result.out:
            process.stdout.write(result.out.encode())
        if result.err:
            process.stderr.write(result.err.encode())
        process.exit(result.rc)


class _Server(asyncssh.SSHServer):
    def __init__(self, owner: HostServer) -> None:
        self.owner = owner
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        if not self.owner.reachable():
            conn.abort()
            return
        self.owner.connections.add(conn)
        self.owner.connections_accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.owner.connections.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        if username not in ("corral", "root"):
            raise asyncssh.PermissionDenied(f"unknown user {username}")
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        if dest_host in ("127.0.0.1", "localhost"):
            for vm in self.owner.host.vms.values():
                if vm.status != "shutdown" and vnc_port(vm.argv) == dest_port:
                    return VncSession()
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"{dest_host}:{dest_port}: Connection refused"
        )

    def unix_connection_requested(self, dest_path: str) -> Any:
        host = self.owner.host
        for vm in host.vms.values():
            if vm.qmp_path == dest_path:
                return QmpSession(self.owner.fabric, host, vm.name)
            if vm.status != "shutdown" and serial_path(vm.argv) == dest_path:
                return SerialSession(vm.name)
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"{dest_path}: Connection refused"
        )
