"""A blocking QMP client over a local unix socket, for the node-VM fixture and its
fence agent (short-lived programs with no event loop): greeting, capabilities, one
command, its reply. Standard library only.
"""

from __future__ import annotations

import json
import socket
from typing import Any


def qmp_command(
    path: str, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 5.0
) -> dict[str, Any]:
    """Run one QMP command; its reply ({"return": ...} or {"error": ...}). A `quit`
    whose connection closes before the reply counts as answered."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        stream = sock.makefile("rwb")
        greeting = json.loads(stream.readline() or b"{}")
        if "QMP" not in greeting:
            raise ValueError(f"{path}: not a QMP greeting")
        reply: dict[str, Any] = {}
        for cmd, args in (("qmp_capabilities", None), (command, arguments)):
            msg: dict[str, Any] = {"execute": cmd}
            if args:
                msg["arguments"] = args
            stream.write(json.dumps(msg).encode() + b"\n")
            stream.flush()
            while True:
                try:
                    line = stream.readline()
                except ConnectionResetError:
                    line = b""
                if not line:
                    if cmd == "quit":
                        return {"return": {}}
                    raise ValueError(f"{path}: QMP closed during {cmd}")
                reply = json.loads(line)
                if "event" not in reply:
                    break
        return reply
