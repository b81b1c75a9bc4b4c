"""`corral instance console NAME`: the VM's serial console on its primary node,
relayed over SSH (a unix-socket forward to qemu's `-serial unix:` socket) with the
node's pinned host key. Ctrl-] quits. With `--vnc`: an SSH local forward from a
port on this machine's loopback to the VM's VNC display on the node's loopback;
the local port is printed for a viewer, and the forward lasts until interrupted.

Records nothing and changes nothing on the node.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from events.ids import InstanceName
from events.state import ClusterState
from orchestrator.cli.context import UsageError
from reactors.naming import VNC_BASE_PORT, run_dir, vnc_display


async def console(args: argparse.Namespace, state: ClusterState, name: InstanceName) -> int:
    import asyncssh

    placement = state.placements.get(name)
    if placement is None:
        raise UsageError(f"{name} is not placed yet; it has no console")
    if args.known_hosts is None or args.client_key is None:
        raise UsageError(
            "console needs --known-hosts and --client-key (or CORRAL_KNOWN_HOSTS and "
            "CORRAL_CLIENT_KEY): host keys are always pinned"
        )
    node = state.desired.nodes[placement.primary]
    if args.vnc:
        display = vnc_display(placement.disks[0].minor) if placement.disks else None
        if display is None:
            raise UsageError(f"{name} has no VNC display (its first DRBD minor is too high)")
        return await _vnc_forward(args, node, name, display)
    path = f"{run_dir()}/{name}.serial"
    try:
        async with asyncssh.connect(
            node.address,
            node.port,
            username=node.ssh_user,
            known_hosts=str(args.known_hosts),
            client_keys=[str(args.client_key)],
        ) as conn:
            reader, writer = await conn.open_unix_connection(path, encoding=None)
            print(
                f"connected to {name}'s serial console on {node.name}; Ctrl-] quits",
                file=sys.stderr,
            )
            return await _relay(reader, writer)
    except (OSError, asyncssh.Error) as exc:
        raise UsageError(f"console of {name} on {node.name}: {exc}") from exc


async def _vnc_forward(
    args: argparse.Namespace, node: Any, name: InstanceName, display: int
) -> int:
    import asyncssh

    remote = VNC_BASE_PORT + display
    try:
        async with asyncssh.connect(
            node.address,
            node.port,
            username=node.ssh_user,
            known_hosts=str(args.known_hosts),
            client_keys=[str(args.client_key)],
        ) as conn:
            listener = await conn.forward_local_port(
                "127.0.0.1", args.local_port, "127.0.0.1", remote
            )
            port = listener.get_port()
            print(port, flush=True)
            print(
                f"VNC of {name} (display {display} on {node.name}'s loopback, port {remote}) "
                f"forwarded to 127.0.0.1:{port}: point a viewer at it "
                f"(vncviewer 127.0.0.1::{port}); Ctrl-C ends the forward",
                file=sys.stderr,
                flush=True,
            )
            await listener.wait_closed()
    except (OSError, asyncssh.Error) as exc:
        raise UsageError(f"VNC console of {name} on {node.name}: {exc}") from exc
    return 0


async def _relay(reader: Any, writer: Any) -> int:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    tty = sys.stdin.isatty()
    old = None
    if tty:
        import termios
        import tty as ttymod

        old = termios.tcgetattr(sys.stdin.fileno())
        ttymod.setraw(sys.stdin.fileno())

    async def pump_out() -> None:
        while data := await reader.read(4096):
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    out = asyncio.create_task(pump_out())
    try:
        while data := await stdin.read(1024):
            before, quit_key, _ = data.partition(b"\x1d")  # Ctrl-] quits
            if before:
                writer.write(before)
            if quit_key:
                break
        await asyncio.sleep(0.2)
    finally:
        out.cancel()
        writer.close()
        if old is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, old)
    return 0
