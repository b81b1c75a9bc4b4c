"""`make demo` leaves nothing running when it is told to stop: SIGTERM (`kill`) and
SIGHUP (its terminal closed) stop its etcd, which runs in a session of its own,
and remove its working directory, as Ctrl-C does (every member of its
three-member etcd). Runs the real demo module as a
process and checks what is left on the machine, not what the demo says.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

_ETCD_LINE = re.compile(r"^etcd\s+: started on (\S+) \(data in (\S+)/etcd\)$")


def _answers(endpoint: str) -> bool:
    """Something listens on the demo etcd's client port (TLS: a TCP connect)."""
    host, _, port = endpoint.removeprefix("https://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _read_until(
    proc: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float
) -> re.Match[str]:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        found = pattern.match(seen[-1])
        if found:
            return found
    raise AssertionError(f"no line matching {pattern.pattern!r} in: {seen}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signalled_demo_stops_its_etcd_and_removes_its_files(sig: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.demo"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        started = _read_until(proc, _ETCD_LINE, timeout=60)
        endpoint, workdir = started.group(1), Path(started.group(2))
        assert all(_answers(e) for e in endpoint.split(",")) and workdir.is_dir()
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, rest
    assert "stopped: everything the demo started has been stopped." in rest
    assert not any(_answers(e) for e in endpoint.split(","))
    assert not workdir.exists()
