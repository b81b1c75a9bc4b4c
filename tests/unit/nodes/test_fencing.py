"""The fence runner speaks the ClusterLabs stdin convention, never leaks secrets, and
runs only what the orchestrator host's fencing configuration allows: the agents,
their paths, the options the desired state may set, the device addresses and the
secrets are the host's. The agents here are real executables written by the test
(users plug in any agent of this shape); the simulator's agent runs in the heal
tests, in lab mode.

Reproduces the review's findings: a desired-state admin's spec sent the host's IPMI
password to a listener of theirs, and the lab agent (installed in the venv) answered
"Powered OFF" for a node nothing powered off."""

from __future__ import annotations

from pathlib import Path

import pytest

from events.specs import FenceSpec
from reactors.nodes.fence_config import (
    FencingConfig,
    FencingConfigError,
    load_fencing,
    parse_fencing,
)
from reactors.nodes.fencing import run_fence_agent

AGENT = """#!/bin/sh
cat > "{log}"
action=$(grep '^action=' "{log}" | cut -d= -f2)
echo "got password $(grep '^password=' "{log}" | cut -d= -f2)"
case "$action" in
  off) exit 0 ;;
  status) exit 2 ;;
  *) exit 1 ;;
esac
"""
# What a desired-state admin would point fencing at: records what it is sent and
# says the node is off, without powering anything off.
LISTENER = """#!/bin/sh
cat >> "{log}"
echo "Success: Powered OFF"
exit 0
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FencingConfig, Path, Path]:
    """A host allowing one agent (standing in for fence_ipmilan), with node1's
    BMC address pinned and the password in a per-node file; plus a listener
    script on PATH and in the venv's bin, where the old code found agents."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stdin_log, stolen = tmp_path / "stdin.txt", tmp_path / "stolen.txt"
    agent = _script(bin_dir / "fence_testagent", AGENT.format(log=stdin_log))
    _script(bin_dir / "fence_listener", LISTENER.format(log=stolen))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "node1.password").write_text("s3cret-value\n")
    monkeypatch.setenv("CORRAL_IPMI_PASSWORD", "s3cret-value")
    config_file = tmp_path / "fencing.yaml"
    config_file.write_text(
        f"""agents:
  fence_testagent:
    path: {agent}
    allow: [lanplus]
    options: {{username: admin}}
    secrets:
      password: {{file: "{secrets}/{{node}}.password"}}
    nodes:
      node1: {{ip: 10.2.0.1}}
"""
    )
    return load_fencing(config_file), stdin_log, stolen


async def test_the_agent_gets_the_hosts_options_and_secret(
    host: tuple[FencingConfig, Path, Path],
) -> None:
    config, stdin_log, _ = host
    spec = FenceSpec(agent="fence_testagent", options=(("lanplus", "1"),))
    rc, out = await run_fence_agent(spec, "off", config=config, node="node1")
    assert rc == 0
    assert stdin_log.read_text().splitlines() == [
        "action=off",
        "username=admin",
        "ip=10.2.0.1",
        "lanplus=1",
        "password=s3cret-value",
    ]
    assert "s3cret-value" not in out and "***" in out
    rc, _ = await run_fence_agent(spec, "status", config=config, node="node1")
    assert rc == 2


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        # An agent of the admin's choosing (the old code took any fence_* on PATH).
        (FenceSpec(agent="fence_listener"), "not allowed on this orchestrator host"),
        # The allowed agent pointed at the admin's own listener.
        (
            FenceSpec(agent="fence_testagent", options=(("ip", "192.0.2.66"),)),
            "set by this host's fencing configuration",
        ),
        # An option the host does not allow, and one that runs a program.
        (FenceSpec(agent="fence_testagent", options=(("plug", "7"),)), "not allowed for"),
        (
            FenceSpec(agent="fence_testagent", options=(("password_script", "/tmp/x"),)),
            "runs or names",
        ),
        # The lab's agent (installed in the venv) outside lab mode.
        (FenceSpec(agent="fence_corral_sim"), "only in lab mode"),
    ],
)
async def test_a_desired_state_admin_cannot_steal_the_password_or_fake_a_fence(
    host: tuple[FencingConfig, Path, Path], spec: FenceSpec, why: str
) -> None:
    config, stdin_log, stolen = host
    with pytest.raises(FencingConfigError, match=why):
        await run_fence_agent(spec, "off", config=config, node="node1")
    assert not stolen.exists() and not stdin_log.exists()  # nothing ran


def test_the_host_configuration_refuses_what_would_undo_it(tmp_path: Path) -> None:
    agent = _script(tmp_path / "fence_x", "#!/bin/sh\nexit 0\n")

    def parse(body: str, *, lab: bool = False) -> FencingConfig:
        head = "lab: true\n" if lab else ""
        return parse_fencing(
            __import__("ruamel.yaml", fromlist=["YAML"]).YAML(typ="safe").load(head + body),
            source="fencing.yaml",
        )

    with pytest.raises(FencingConfigError, match="name the fence device"):
        parse(f"agents:\n  fence_x: {{path: {agent}, allow: [ip]}}\n")
    with pytest.raises(FencingConfigError, match="runs or names"):
        parse(f"agents:\n  fence_x: {{path: {agent}, allow: [password_script]}}\n")
    with pytest.raises(FencingConfigError, match="only with `lab: true`"):
        parse(f"agents:\n  fence_corral_sim: {{path: {agent}}}\n")
    with pytest.raises(FencingConfigError, match="must be"):
        parse(f"agents:\n  fence_x: {{path: {agent}, secrets: {{password: hunter2}}}}\n")
    lab = parse("agents: {}\n", lab=True)
    assert lab.policy("fence_corral_sim").allow == {"ip", "ipport", "plug"}
    assert FencingConfig.for_lab().lab
    with pytest.raises(FencingConfigError, match="not allowed on this orchestrator host"):
        FencingConfig().policy("fence_ipmilan")


async def test_missing_secrets_and_bad_actions_are_refused(
    host: tuple[FencingConfig, Path, Path], tmp_path: Path
) -> None:
    config, stdin_log, _ = host
    spec = FenceSpec(agent="fence_testagent")
    with pytest.raises(FencingConfigError, match="cannot read"):
        await run_fence_agent(spec, "off", config=config, node="node2")
    with pytest.raises(FencingConfigError, match="not one of"):
        await run_fence_agent(spec, "explode", config=config, node="node1")
    assert not stdin_log.exists()
