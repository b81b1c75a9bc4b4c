"""Where the time goes in a bench run: py-spy samples a process (the
orchestrator's, the simulator's) while the run lasts, and the samples are summed
by package and by the function on top of the stack. Without py-spy (or without
ptrace rights) the summary says so and the run goes on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PACKAGES = (
    "simulators",
    "reactors",
    "events",
    "orchestrator",
    "asyncssh",
    "cryptography",
    "aetcd",
    "grpc",
    "asyncio",
    "json",
    "shlex",
    "msgspec",
    "pydantic",
)


class Sampler:
    def __init__(self, pid: int, out: Path, *, rate: int = 50) -> None:
        self.out = out
        self.error = ""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.process: subprocess.Popen[bytes] | None = None
        if not Path(spy).exists():
            self.error = "py-spy not installed"
            return
        self.process = subprocess.Popen(
            # --gil: only the thread holding the GIL, i.e. where the CPU goes.
            [spy, "record", "--gil", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> dict[str, Any]:
        if self.process is None:
            return {"error": self.error}
        self.process.send_signal(2)  # SIGINT: py-spy writes what it sampled
        try:
            _, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return {"error": "py-spy did not stop"}
        if not self.out.exists():
            return {"error": err.decode(errors="replace").strip()[-300:] or "no samples"}
        return summarize(self.out)


def _package(frame: str) -> str:
    # "function (path/to/module.py:123)", the path relative to sys.path
    path = "/" + frame.rpartition("(")[2]
    for name in PACKAGES:
        if f"/{name}/" in path or f"/{name}.py:" in path:
            return name
    return "other"


def summarize(raw: Path, *, top: int = 12) -> dict[str, Any]:
    leaves: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        leaves[frames[-1]] += n
        # Charge the sample to the innermost frame of a known package.
        owner = next((p for p in (_package(f) for f in reversed(frames)) if p != "other"), "other")
        packages[owner] += n
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "by_package_pct": {p: round(100 * n / total, 1) for p, n in packages.most_common()},
        "top_functions_pct": [
            [f[:120], round(100 * n / total, 1)] for f, n in leaves.most_common(top)
        ],
    }
