"""`corral serve`'s node timeouts (--probe-timeout, --command-timeout,
--ssh-timeout): out-of-range values are refused naming the flag, before anything
connects; the SSH keep-alive follows --ssh-timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli.main import main
from reactors.nodes.ssh_ops import SshNodeOps


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--command-timeout", "0.5"), ("--ssh-timeout", "500"), ("--probe-timeout", "0.1")],
)
def test_out_of_range_timeouts_are_refused_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    known, key = tmp_path / "known_hosts", tmp_path / "key"
    known.write_text("")
    key.write_text("")
    rc = main(
        ["serve", "--etcd", "http://127.0.0.1:1", "--cluster", "c", "--known-hosts", str(known),
         "--client-key", str(key), flag, value]
    )  # fmt: skip
    assert rc == 1
    assert f"{flag}: {value} is not between" in capsys.readouterr().err


def test_keepalive_follows_the_ssh_timeout(tmp_path: Path) -> None:
    """A connection silent for about the SSH timeout is dropped: 2 s keep-alives,
    unanswered about timeout/2 times (at least 2)."""
    ops = SshNodeOps(known_hosts=tmp_path / "k", client_key=tmp_path / "c", connect_timeout_s=60)
    assert ops.keepalive_count_max == 30
    assert (
        SshNodeOps(known_hosts=tmp_path / "k", client_key=tmp_path / "c").keepalive_count_max == 2
    )
