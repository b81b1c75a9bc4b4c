"""What starting `corral instance|node|job ...` imports: building those groups'
parsers must not load asyncssh or numpy (about 0.19 s of start-up, for commands
such as `instance list` that need neither). Each case starts the real entry point
in a new interpreter under `python -X importtime` and reads its import log.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = frozenset({"asyncssh", "numpy"})


def _imported(*argv: str) -> tuple[str, set[str]]:
    """The help text `corral ARGV --help` prints and the top-level packages it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "orchestrator.cli.main", *argv, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "argparse" in names, "no import log read"  # the log was there to read
    return done.stdout, names


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (("instance", "list"), "--json"),
        (("node", "list"), "--json"),
        (("job", "list"), "--all"),
        (("instance", "info"), "name"),
        (("node",), "reboot-plan"),
        (("node", "add"), "--known-hosts"),
        (("node", "check"), "--install"),
        (("node", "reboot-plan"), "--evacuate"),
    ],
)
def test_group_parsers_do_not_load_asyncssh_or_numpy(argv: tuple[str, ...], shown: str) -> None:
    out, names = _imported(*argv)
    assert shown in out
    assert not names & HEAVY, f"corral {' '.join(argv)} --help imported {sorted(names & HEAVY)}"
