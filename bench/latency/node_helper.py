"""What the node helper costs per command, side by side: over a real OpenSSH server
with real sudo (in a private mount namespace; needs root), a plain command against
the helper through sudo, and a step's four requests as four calls against one
batch; and the same on a simulated node, where the helper runs in process."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh

from simulators.lab import HostConfig, Lab
from simulators.node_helper import HELPER_PATH
from tests.support.nodes.real_sshd import skip_reason, start_real_node

ROUNDS = 30
RES = {
    "minor": 3,
    "port": 11003,
    "volume_group": "corral",
    "allow_two_primaries": False,
    "hosts": [
        {"node": "node1", "node_id": 0, "address": "10.0.0.1"},
        {"node": "node2", "node_id": 1, "address": "10.0.0.2"},
    ],
}


def _four(n: int) -> list[tuple[str, str]]:
    """Four mutating requests (what a create-disk step sends), as (argv, stdin)."""
    res = f"bench{n}-d0"
    body = json.dumps({**RES, "resource": res})
    return [
        ("drbd-config", body),
        ("drbd-config", body),
        (f"drbd-remove-config {res}", ""),
        (f"drbd-remove-config {res}", ""),
    ]


async def _median_ms(fn: Callable[[int], Awaitable[None]]) -> float:
    await fn(-1)  # warm up
    times = []
    for n in range(ROUNDS):
        started = time.perf_counter()
        await fn(n)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


async def _measure(conn: asyncssh.SSHClientConnection) -> dict[str, float]:
    async def run(line: str, stdin: str = "") -> None:
        done = await conn.run(line, input=stdin or None, check=False)
        assert done.exit_status == 0, (line, done.stderr)

    async def plain(n: int) -> None:
        await run("true")

    async def version(n: int) -> None:
        await run(f"sudo -n {HELPER_PATH} version")

    async def four_calls(n: int) -> None:
        for argv, stdin in _four(n):
            verb, _, rest = argv.partition(" ")
            await run(f"sudo -n {HELPER_PATH} {verb} --term 1 {rest}", stdin)

    async def one_batch(n: int) -> None:
        lines = []
        for argv, stdin in _four(n):
            doc: dict[str, Any] = {"argv": argv.split(), "group": "step"}
            if stdin:
                doc["stdin"] = stdin
            lines.append(json.dumps(doc))
        await run(f"sudo -n {HELPER_PATH} batch --term 1", "\n".join(lines) + "\n")

    return {
        "plain_command_ms": await _median_ms(plain),
        "helper_version_ms": await _median_ms(version),
        "four_calls_ms": await _median_ms(four_calls),
        "one_batch_of_four_ms": await _median_ms(one_batch),
    }


async def _real() -> dict[str, float] | str:
    reason = skip_reason()
    if reason is not None:
        return reason
    with tempfile.TemporaryDirectory() as tmp:
        node = await asyncio.to_thread(start_real_node, Path(tmp))
        try:
            async with await node.connect() as conn:
                figures = await _measure(conn)
        finally:
            await asyncio.to_thread(node.stop)
    return figures


async def _simulated() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lab = await Lab.start(
            hosts=[HostConfig(name="node1")], state_dir=Path(tmp) / "lab", control=False
        )
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                lab.servers["node1"].port,
                username="corral",
                client_keys=[str(lab.client_key_path)],
                known_hosts=str(lab.known_hosts_path),
            ) as conn:
                return await _measure(conn)
        finally:
            await lab.stop()


def run() -> dict[str, Any]:
    real = asyncio.run(_real())
    sim = asyncio.run(_simulated())
    rows: list[list[Any]] = [["node", "plain `true`", "helper version", "4 calls", "1 batch of 4"]]
    for label, figures in (("real sshd + sudo", real), ("simulated", sim)):
        if isinstance(figures, str):
            rows.append([label, f"skipped: {figures}", "", "", ""])
            continue
        rows.append(
            [
                f"{label} (ms, median of {ROUNDS})",
                figures["plain_command_ms"],
                figures["helper_version_ms"],
                figures["four_calls_ms"],
                figures["one_batch_of_four_ms"],
            ]
        )
    return {"real": real, "simulated": sim, "table": rows}
