"""The lab as its own process (`corral sim up` starts it): runs a Lab until
SIGTERM/SIGINT, then stops every simulated host. Writes inventory.json and pid
into the state dir.

Imports nothing from corral's own packages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from simulators.lab import HostConfig, Lab


async def serve(hosts: list[HostConfig], state_dir: Path, sync_rate: float) -> None:
    lab = await Lab.start(hosts=hosts, state_dir=state_dir, sync_rate_mib_s=sync_rate)
    (state_dir / "lab.pid").write_text(f"{os.getpid()}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await lab.stop()
        with contextlib.suppress(OSError):
            (state_dir / "lab.pid").unlink()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.lab_process")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--hosts", required=True, help="JSON list of host configs")
    parser.add_argument("--sync-rate", type=float, default=1000.0)
    args = parser.parse_args()
    hosts = [HostConfig(**h) for h in json.loads(args.hosts)]
    asyncio.run(serve(hosts, args.state_dir, args.sync_rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
