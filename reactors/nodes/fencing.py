"""Running a node's fence agent with the ClusterLabs fence-agents convention:
`key=value` lines on stdin (`action=off`, `ip=...`, `password=...`), exit status
0 for success (and for `status`: 0 on, 2 off, 1 failure), as fence_ipmilan does.

What runs is decided by the orchestrator host's fencing configuration
(reactors.nodes.fence_config): the agent must be one it allows, at the path it
names; the desired state's options must be ones it allows for that agent; the
device's address and the secrets come from it. Secrets are read only here, at the
moment the agent runs; they are written to the agent's stdin and never logged,
returned or recorded.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from events.fields.fence import fence_option_refused
from events.specs import FenceSpec
from reactors.nodes.fence_config import (
    AgentPolicy,
    FencingConfig,
    FencingConfigError,
    SecretSource,
)

ACTIONS = frozenset({"on", "off", "reboot", "status", "monitor", "list", "metadata"})


def resolve_secret(source: SecretSource, *, node: str) -> str:
    if source.env:
        value = os.environ.get(source.env)
        if value is None:
            raise FencingConfigError(f"fence secret: environment variable {source.env} is not set")
        return value
    path = source.file.replace("{node}", node)
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise FencingConfigError(f"fence secret: cannot read {path}: {exc.strerror}") from exc


def _options(policy: AgentPolicy, spec: FenceSpec, node: str) -> list[tuple[str, str]]:
    """The host's fixed options, the node's, then the desired state's allowed ones."""
    fixed = [*policy.options, *policy.nodes.get(node, ())]
    pinned = {k for k, _ in fixed} | {k for k, _ in policy.secrets}
    chosen: list[tuple[str, str]] = []
    for key, value in spec.options:
        if fence_option_refused(key):
            raise FencingConfigError(f"fence option {key!r} runs or names a local program or file")
        if key in pinned:
            raise FencingConfigError(
                f"fence option {key!r} for {node} is set by this host's fencing configuration; "
                "the desired state may not change it"
            )
        if key not in policy.allow:
            raise FencingConfigError(
                f"fence option {key!r} is not allowed for {policy.name} by this host's "
                "fencing configuration"
            )
        chosen.append((key, value))
    return fixed + chosen


def agent_stdin(spec: FenceSpec, action: str, *, config: FencingConfig, node: str) -> bytes:
    if action not in ACTIONS:
        raise FencingConfigError(f"fence action {action!r} is not one of {sorted(ACTIONS)}")
    policy = config.policy(spec.agent)
    lines = [f"action={action}"]
    for key, value in _options(policy, spec, node):
        if "\n" in key or "\n" in value or "=" in key:
            raise FencingConfigError(f"fence option {key!r} contains a newline or '='")
        lines.append(f"{key}={value}")
    for key, source in policy.secrets:
        value = resolve_secret(source, node=node)
        if "\n" in value:
            raise FencingConfigError(f"fence secret for {key!r} contains a newline")
        lines.append(f"{key}={value}")
    return ("\n".join(lines) + "\n").encode()


async def run_fence_agent(
    spec: FenceSpec, action: str, *, config: FencingConfig, node: str, timeout: float = 30.0
) -> tuple[int, str]:
    """Run the agent as this host's configuration allows; return (exit status, its
    output with secrets removed). FencingConfigError, without running anything, for
    an agent or option the configuration does not allow."""
    stdin = agent_stdin(spec, action, config=config, node=node)
    policy = config.policy(spec.agent)
    if not os.access(policy.path, os.X_OK):
        raise FencingConfigError(f"fence agent {policy.path} is not an executable file")
    proc = await asyncio.create_subprocess_exec(
        policy.path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 1, f"{spec.agent} {action} timed out after {timeout:.0f}s"
    text = out.decode(errors="replace")
    for _, source in policy.secrets:
        try:
            secret = resolve_secret(source, node=node)
        except FencingConfigError:
            continue
        if secret:
            text = text.replace(secret, "***")
    return proc.returncode or 0, text
