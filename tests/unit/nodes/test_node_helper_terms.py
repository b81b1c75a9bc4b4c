"""The node's term under real concurrency (real processes, real flock, files in a
temporary root): no command of an older term runs once a newer one was accepted,
the node keeps the highest term, a term raise waits for running commands and gives
up clearly when they take too long; and the deployed single file, built from the
package, behaves as the package does."""

from __future__ import annotations

import multiprocessing
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import nodehelper.env
from nodehelper.bundle import bundle
from nodehelper.env import LockBusy, RealEnv
from nodehelper.terms import StaleTerm, read_term, term_held


def _command(root: str, term: int) -> str:
    """One mutating command of `term`: logs the node's term when it starts and when
    it ends, holding the term."""
    env = RealEnv(root=root)
    log = Path(root) / "log"
    try:
        with term_held(env, term):
            with log.open("a") as f:
                f.write(f"{term} {read_term(env)} start\n")
            time.sleep(random.uniform(0, 0.01))
            with log.open("a") as f:
                f.write(f"{term} {read_term(env)} end\n")
    except StaleTerm:
        return f"{term} stale"
    return f"{term} ran"


def test_concurrent_commands_of_many_terms_never_run_behind_a_newer_term(
    tmp_path: Path,
) -> None:
    terms = [t for t in range(1, 13) for _ in range(4)]
    random.Random(7).shuffle(terms)
    with multiprocessing.get_context("fork").Pool(8) as pool:
        outcomes = pool.starmap(_command, [(str(tmp_path), t) for t in terms])
    lines = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    ran = [int(o.split()[0]) for o in outcomes if o.endswith("ran")]
    stale = [int(o.split()[0]) for o in outcomes if o.endswith("stale")]
    assert len(ran) + len(stale) == len(terms)
    # While a command ran, the node's term was its own, from start to end: a newer
    # term was not accepted in the meantime.
    assert all(int(term) == int(seen) for term, seen, _ in lines)
    # Commands ran in non-decreasing term order.
    started = [int(term) for term, _, what in lines if what == "start"]
    assert started == sorted(started) and len(started) == len(ran)
    assert read_term(RealEnv(root=str(tmp_path))) == 12
    assert 12 in ran
    # A refused command was older than a term the node had already accepted.
    assert all(t < 12 for t in stale)


def test_a_term_raise_waits_for_running_commands_and_gives_up_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodehelper.env, "LOCK_WAIT_S", 0.3)
    env = RealEnv(root=str(tmp_path))
    running = threading.Event()
    release = threading.Event()

    def long_command() -> None:
        with term_held(RealEnv(root=str(tmp_path)), 5):
            running.set()
            release.wait(10)

    worker = threading.Thread(target=long_command)
    worker.start()
    assert running.wait(10)
    with pytest.raises(LockBusy, match="stayed taken"), term_held(env, 6):
        pass
    assert read_term(env) == 5
    with term_held(env, 5):  # the same term shares the lock
        pass
    release.set()
    worker.join(10)
    with term_held(env, 6):
        pass
    assert read_term(env) == 6


def test_the_deployed_file_is_one_stdlib_script_that_behaves_as_the_package(
    tmp_path: Path,
) -> None:
    text = bundle()
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert "from nodehelper" not in text and "import nodehelper" not in text
    script = tmp_path / "corral-node-helper"
    script.write_text(text)

    def helper(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", str(script), *argv],
            capture_output=True,
            text=True,
            timeout=30,
            input="",
        )

    assert helper("version").stdout == "corral-node-helper 1\n"
    refused = helper("lv-create", "--term", "3", "corral", "x;id", "64")
    assert refused.returncode == 64
    assert refused.stderr == (
        "corral-node-helper: lv-create: LV 'x;id' is not a corral disk name (INSTANCE-dN)\n"
    )
    unknown = helper("sh", "-c", "id")
    assert unknown.returncode == 64 and "unknown verb 'sh'" in unknown.stderr
