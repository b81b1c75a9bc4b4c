"""`make demo` end to end, as a user runs it: three orchestrators, the leader's node
crashed; the printed timeline shows the handover (old leader lost, new leader
elected, its first reconcile) and the heal phases in a possible order, and the
lab says every instance runs exactly once with the crashed node off. Then every
command the demo suggests is run as printed (`.venv/bin/corral` as this Python's
`corral`, with the printed environment) and does what the demo says: the crashed
node comes back with its orchestrator, and crashing the new leader's node fences
it while an orchestrator elsewhere leads. Finally SIGTERM stops everything.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.etcd.test_demo_signals import _answers, read_until

ROOT = Path(__file__).resolve().parents[2]
CORRAL = [sys.executable, "-m", "orchestrator.cli.main"]
PHASE = re.compile(r"^\s+\+\s*([0-9.]+)s\s+(\S.*?\S)\s{2,}(.*)$")
PHASES = (
    "old leader lost",
    "new leader elected",
    "first reconcile",
    "suspect",
    "lost",
    "fenced",
    "first back",
    "all back",
)


def _wait(
    what: str, check: Callable[[], bool], timeout: float, explain: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{explain()}")


# Minutes on this shared 2-core machine: run by `make bench` (`-m slow`), not
# `make test`. The demo's stall in the scripted apply (6 of 22 runs) was
# `apply --wait` missing placements written between its transactions (fixed;
# tests/lab/faces/test_apply_wait.py); the one "before the dashboard" was this test's
# reader (`read_until`). `test_demo_signals` stays in `make test`.
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_demo_hands_over_heals_and_its_suggested_commands_work() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"CORRAL_DEMO_STAY": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.demo"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        lines, _ = read_until(
            proc, lambda line: True if line.startswith("Press Ctrl-C") else None, timeout=420
        )
        text = "\n".join(lines)
        endpoints = re.search(r"^etcd\s+: started on (\S+) ", text, re.M)
        workdir = re.search(r"\(data in (\S+)/etcd\)", text)
        victim_line = re.search(r"^-- crashing (node\d), the leader's node", text, re.M)
        assert endpoints and workdir and victim_line, text
        victim = victim_line.group(1)

        # The timeline: every phase printed once, in a possible order.
        start = lines.index(next(x for x in lines if x.startswith("timeline of the loss")))
        at: dict[str, float] = {}
        for line in lines[start + 1 :]:
            m = PHASE.match(line)
            if m is None:
                if at:
                    break
                continue
            at[m.group(2)] = float(m.group(1))
        assert set(PHASES) <= set(at), at
        assert at["old leader lost"] <= at["new leader elected"] <= at["first reconcile"]
        assert at["suspect"] < at["lost"] < at["fenced"] <= at["first back"] <= at["all back"]
        # Nothing of the heal can start before a new leader leads.
        assert at["new leader elected"] < at["suspect"]
        assert f"crashed, with the leader {victim} on it" in text

        # The commands, as printed.
        exported = next(x for x in lines if x.strip().startswith("export "))
        cmd_env = dict(os.environ)
        for word in shlex.split(exported.strip())[1:]:
            key, _, value = word.partition("=")
            cmd_env[key] = value
        suggested = [
            shlex.split(x.strip())[1:] for x in lines if x.strip().startswith(".venv/bin/corral ")
        ]
        assert [c[:2] for c in suggested] == [
            ["status"],
            ["cluster", "leader"],
            ["sim", "power"],
            ["sim", "fault"],
            ["plan", "-f"],
        ][: len(suggested)] and len(suggested) == 5, suggested

        def corral(args: list[str]) -> str:
            done = subprocess.run(
                [*CORRAL, *args], env=cmd_env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            return done.stdout

        def leader() -> dict[str, Any]:
            return dict(json.loads(corral(["cluster", "leader", "--json"])))

        # The lab's own view after the heal: each of the 60 runs exactly once,
        # none on the crashed node, which is off.
        lab_dir = Path(workdir.group(1)) / "lab"
        lab = json.loads(corral(["sim", "status", "--state-dir", str(lab_dir), "--json"]))
        vms = [v for n in lab["nodes"].values() for v in n["vms"]]
        assert len(vms) == 60 and len(set(vms)) == 60
        assert lab["nodes"][victim]["power"] == "off"

        corral(suggested[0])
        first = leader()
        assert first["leader"]["id"] != victim
        corral(suggested[1])

        corral(suggested[2])  # power the crashed node on: back, with its orchestrator
        assert suggested[2][3] == victim

        def members() -> set[str]:
            now = leader()
            return {s["id"] for s in now["standbys"]} | (
                {now["leader"]["id"]} if now["leader"] else set()
            )

        def seen() -> str:
            return "\n" + corral(["status"]) + corral(["cluster", "leader"])

        _wait(
            f"{victim} online and its orchestrator back",
            lambda: (
                len(
                    json.loads(corral(["status", "--json"]))["nodes"]["by_health"].get("online", [])
                )
                == 4
                and victim in members()
            ),
            300,
            seen,
        )

        corral(suggested[3])  # crash the new leader's node: another handover
        crashed = suggested[3][3]
        assert crashed == first["leader"]["id"]

        def handed_over() -> bool:
            # The crashed node fenced, and an orchestrator on another node leads
            # (leadership may also have moved on its own on a starved machine:
            # then the crash took a standby, and the leader stays elsewhere).
            health = json.loads(corral(["status", "--json"]))["nodes"]["by_health"]
            now = leader()["leader"]
            return len(health.get("fenced", [])) == 1 and now is not None and now["id"] != crashed

        _wait(f"{crashed} fenced and another orchestrator leading", handed_over, 300, seen)
        corral(suggested[4])

        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:  # a failure above: let the demo clean up first
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 143, rest
    assert not any(_answers(e) for e in endpoints.group(1).split(","))
    assert not Path(workdir.group(1)).exists()
