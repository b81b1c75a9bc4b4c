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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

_ETCD_LINE = re.compile(r"^etcd\s+: started on (\S+) \(data in (\S+)/etcd\)$")


def _answers(endpoint: str) -> bool:
    """Something listens on the demo etcd's client port (TLS: a TCP connect)."""
    host, _, port = endpoint.removeprefix("https://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def read_until(
    proc: subprocess.Popen[str], match: Callable[[str], T | None], timeout: float
) -> tuple[list[str], T]:
    """The demo's output lines up to the first one `match` accepts, and what it
    returned for it. Read from the pipe itself (os.read): a select on the buffered
    reader waited for new bytes while whole lines sat in its buffer, so a burst of
    lines followed by silence (the demo's last lines, ending with 'Press Ctrl-C')
    was never read: test_demo_story failed so after 420 s while the demo itself
    waited at its prompt (the "stall before the dashboard")."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    seen: list[str] = []
    pending = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            seen.append(raw.decode(errors="replace").rstrip("\r"))
            found = match(seen[-1])
            if found is not None:
                return seen, found
    raise AssertionError("no line expected in:\n" + "\n".join(seen[-80:]))


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
        _, started = read_until(proc, _ETCD_LINE.match, timeout=60)
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
