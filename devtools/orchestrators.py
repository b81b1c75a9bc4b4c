"""Orchestrator processes for the demo and the benches: `corral serve` run as a
child process "on" a simulated node (named after it), its JSON log kept in a
file, killed with SIGKILL when its node dies (no goodbye: its lease simply
expires), brought back when its node is powered on again, and the handover read
back from the logs (the term's first reconcile pass).

Wiring only; the product never imports it. It decides nothing about the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from devtools.local_etcd import LocalEtcd

FIRST_RECONCILE = "first reconcile of the term"


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstReconcile:
    member: str
    term: int
    at: float  # wall time the pass ended


def _die_with_parent() -> None:
    """In the child: SIGKILL when the process (thread) that started it ends, so a
    demo or bench killed without its clean-up leaves no orchestrator behind."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class ServeProcess:
    """One `corral serve`, started (and started again) with the same arguments;
    every start appends to the same log file."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._close_log()
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.cli.main",
                "serve",
                "--name",
                self.name,
                "--log-format",
                "json",
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            preexec_fn=_die_with_parent,
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def kill(self) -> None:
        """SIGKILL, as when the machine it runs on dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self._close_log()

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM (it gives its lease up), SIGKILL if it does not end in time."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def records(self) -> list[dict[str, Any]]:
        """Its log lines that are JSON objects (every start's)."""
        found: list[dict[str, Any]] = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict):
                        found.append(doc)
        return found

    def first_reconciles(self) -> list[FirstReconcile]:
        return [
            FirstReconcile(member=self.name, term=int(r["term"]), at=float(r["at"]))
            for r in self.records()
            if r.get("event") == FIRST_RECONCILE and "term" in r and "at" in r
        ]


def first_reconcile_after(procs: list[ServeProcess], *, term: int) -> FirstReconcile | None:
    """The earliest first reconcile of a term newer than `term`, by any of them."""
    found = [f for p in procs for f in p.first_reconciles() if f.term > term]
    return min(found, key=lambda f: f.at) if found else None


def serve_env(base: dict[str, str], *, cluster: str) -> dict[str, str]:
    """The environment of an orchestrator process: `base` (the etcd client
    settings of the orchestrator's identity) and the cluster's name."""
    return {**os.environ, **base, "CORRAL_CLUSTER": cluster}


@dataclass
class ControlHost:
    """What of the control plane runs "on" one simulated node: an orchestrator
    and, maybe, an etcd member. They live and die with the node's power."""

    node: str
    orchestrator: ServeProcess
    etcd: LocalEtcd | None = None

    def down(self) -> None:
        """The node lost power: both die at once, without a word."""
        self.orchestrator.kill()
        if self.etcd is not None:
            self.etcd.kill()

    def up(self) -> None:
        """The node is on again: its etcd member rejoins, its orchestrator starts
        (as a standby: the leader key is someone else's by now)."""
        if self.etcd is not None and not self.etcd.running():
            self.etcd.restart()
        if not self.orchestrator.running():
            self.orchestrator.start()


async def follow_power(hosts: list[ControlHost], powered: Callable[[str], bool]) -> None:
    """Forever: keep each host's control plane in step with its node's power, so a
    crash from `corral sim fault crash` takes the orchestrator on that node down
    too, and `corral sim power on` brings it back."""
    while True:
        for h in hosts:
            on = powered(h.node)
            if not on and h.orchestrator.running():
                h.down()
            elif on and not h.orchestrator.running():
                await asyncio.to_thread(h.up)
        await asyncio.sleep(0.2)
