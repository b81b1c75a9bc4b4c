"""The fence runner speaks the ClusterLabs stdin convention and never leaks secrets.
The agent here is a real executable on PATH written by the test (users plug in any
agent of this shape); the simulator's own agent is exercised in the heal tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from events.specs import FenceSpec, SecretRef
from reactors.nodes.fencing import FenceConfigError, agent_stdin, run_fence_agent

AGENT = """#!/bin/sh
cat > "$FENCE_LOG"
action=$(grep '^action=' "$FENCE_LOG" | cut -d= -f2)
echo "got password $(grep '^password=' "$FENCE_LOG" | cut -d= -f2)"
case "$action" in
  off) exit 0 ;;
  status) exit 2 ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "fence_testagent"
    script.write_text(AGENT)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FENCE_LOG", str(tmp_path / "stdin.txt"))
    monkeypatch.setenv("IPMI_PASS", "s3cret-value")
    return tmp_path / "stdin.txt"


async def test_agent_gets_key_value_lines_and_output_hides_the_secret(agent: Path) -> None:
    spec = FenceSpec(
        agent="fence_testagent",
        options=(("ip", "10.0.0.5"), ("username", "admin")),
        secrets=(("password", SecretRef(env="IPMI_PASS")),),
    )
    rc, out = await run_fence_agent(spec, "off")
    assert rc == 0
    assert agent.read_text().splitlines() == [
        "action=off",
        "ip=10.0.0.5",
        "username=admin",
        "password=s3cret-value",
    ]
    assert "s3cret-value" not in out and "***" in out
    rc, _ = await run_fence_agent(spec, "status")
    assert rc == 2


def test_bad_agent_names_and_missing_secrets_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOPE_PASS", raising=False)
    with pytest.raises(FenceConfigError, match="NOPE_PASS"):
        agent_stdin(
            FenceSpec(agent="fence_x", secrets=(("password", SecretRef(env="NOPE_PASS")),)), "off"
        )
    with pytest.raises(FenceConfigError, match="newline"):
        agent_stdin(FenceSpec(agent="fence_x", options=(("ip", "1\naction=on"),)), "off")
    with pytest.raises(FenceConfigError, match="not one of"):
        agent_stdin(FenceSpec(agent="fence_x"), "explode")
