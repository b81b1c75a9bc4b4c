"""Running a node's fence agent with the ClusterLabs fence-agents convention:
`key=value` lines on stdin (`action=off`, `ip=...`, `password=...`), exit status
0 for success (and for `status`: 0 on, 2 off, 1 failure), as fence_ipmilan does.

Secrets named in the FenceSpec are read from their environment variable or file only
here, at the moment the agent runs; they are written to the agent's stdin and never
logged, returned or recorded.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

from events.specs import FenceSpec, SecretRef

_AGENT_RE = re.compile(r"^fence_[a-z0-9_]+$")
ACTIONS = frozenset({"on", "off", "reboot", "status", "monitor", "list", "metadata"})


class FenceConfigError(ValueError):
    pass


def find_agent(agent: str) -> str:
    if not _AGENT_RE.match(agent):
        raise FenceConfigError(f"fence agent {agent!r} must be a name like fence_ipmilan")
    search = os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]
    )
    found = shutil.which(agent, path=search)
    if not found:
        raise FenceConfigError(f"fence agent {agent} not found on PATH")
    return found


def resolve_secret(ref: SecretRef) -> str:
    if ref.env:
        value = os.environ.get(ref.env)
        if value is None:
            raise FenceConfigError(f"fence secret: environment variable {ref.env} is not set")
        return value
    if ref.file:
        try:
            return Path(ref.file).read_text().strip()
        except OSError as exc:
            raise FenceConfigError(f"fence secret: cannot read {ref.file}: {exc.strerror}") from exc
    raise FenceConfigError("fence secret reference names neither env nor file")


def agent_stdin(spec: FenceSpec, action: str) -> bytes:
    if action not in ACTIONS:
        raise FenceConfigError(f"fence action {action!r} is not one of {sorted(ACTIONS)}")
    lines = [f"action={action}"]
    for key, value in spec.options:
        if "\n" in key or "\n" in value or "=" in key:
            raise FenceConfigError(f"fence option {key!r} contains a newline or '='")
        lines.append(f"{key}={value}")
    for key, ref in spec.secrets:
        value = resolve_secret(ref)
        if "\n" in value:
            raise FenceConfigError(f"fence secret for {key!r} contains a newline")
        lines.append(f"{key}={value}")
    return ("\n".join(lines) + "\n").encode()


async def run_fence_agent(
    spec: FenceSpec, action: str, *, timeout: float = 30.0
) -> tuple[int, str]:
    """Run the agent; return (exit status, its output with secrets removed)."""
    binary = find_agent(spec.agent)
    stdin = agent_stdin(spec, action)
    proc = await asyncio.create_subprocess_exec(
        binary,
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
    for _, ref in spec.secrets:
        try:
            secret = resolve_secret(ref)
        except FenceConfigError:
            continue
        if secret:
            text = text.replace(secret, "***")
    return proc.returncode or 0, text
