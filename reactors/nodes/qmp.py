"""A minimal QMP client over any stream pair (a local unix socket, or an SSH
unix-socket forward): read the greeting, negotiate capabilities, run commands,
skip asynchronous events, turn QMP errors into QmpError.

No logging.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol


class QmpError(Exception):
    pass


class _Reader(Protocol):
    async def readline(self) -> bytes: ...


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...


async def _reply(reader: _Reader, cmd: str, timeout: float) -> dict[str, Any] | None:
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            return None
        reply: dict[str, Any] = json.loads(line)
        if "event" not in reply:
            return reply


async def qmp_session(
    reader: _Reader,
    writer: _Writer,
    commands: list[tuple[str, dict[str, Any] | None]],
    *,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Greeting, qmp_capabilities, then `commands` in order; their replies."""
    greeting = await asyncio.wait_for(reader.readline(), timeout)
    if not greeting or "QMP" not in json.loads(greeting):
        raise QmpError(f"not a QMP greeting: {greeting[:80]!r}")
    replies: list[dict[str, Any]] = []
    for cmd, args in [("qmp_capabilities", None), *commands]:
        msg: dict[str, Any] = {"execute": cmd}
        if args:
            msg["arguments"] = args
        writer.write(json.dumps(msg).encode() + b"\n")
        try:
            reply = await _reply(reader, cmd, timeout)
        except ConnectionResetError:
            if cmd != "quit":
                raise
            reply = None  # qemu exits as it answers `quit`; a reset is that exit
        if reply is None:
            if cmd == "quit":
                replies.append({"return": {}})
                return replies
            raise QmpError(f"QMP {cmd}: connection closed")
        if "error" in reply:
            raise QmpError(f"QMP {cmd}: {reply['error'].get('desc', reply['error'])}")
        if cmd != "qmp_capabilities":
            replies.append(reply)
    return replies
