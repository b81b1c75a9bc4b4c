"""The ClusterLabs fence-agents convention, as corral's own agents speak it
(`simulators.fence_agent` for simulated nodes, `devtools.nodevm.fence_qmp` for node
VMs): options as `key=value` lines on stdin (or `--key=value` and `-oACTION`
arguments), the metadata XML an agent prints for `action=metadata`, and the program
around an agent's `run`: its answer on stdout and its exit code (0 on success,
status 0 on and 2 off, 1 on failure, as fence_ipmilan does).

Standard library only; imports nothing of corral's. Must not power anything: each
agent's `run` does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

Run = Callable[[dict[str, str]], tuple[int, str]]


def metadata(*, name: str, shortdesc: str, parameters: Sequence[tuple[str, str, str]]) -> str:
    """The agent's metadata: `parameters` as (name, type, default or "") after
    `action`, and the actions every corral agent answers."""
    lines = [
        '<?xml version="1.0" ?>',
        f'<resource-agent name="{name}" shortdesc="{shortdesc}">',
        "<parameters>",
    ]
    for key, kind, default in (("action", "string", "reboot"), *parameters):
        dflt = f' default="{default}"' if default else ""
        lines.append(
            f'  <parameter name="{key}" unique="0" required="1">'
            f'<content type="{kind}"{dflt}/></parameter>'
        )
    lines += [
        "</parameters>",
        "<actions>",
        '  <action name="on"/><action name="off"/><action name="reboot"/><action name="status"/>',
        '  <action name="monitor"/><action name="list"/><action name="metadata"/>',
        "</actions>",
        "</resource-agent>",
        "",
    ]
    return "\n".join(lines)


def parse_options(text: str) -> dict[str, str]:
    options = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        options[key.strip()] = value.strip()
    return options


def agent_main(run: Run) -> int:
    """Read the options (stdin, then the arguments), run, print the answer; the
    exit code."""
    options = parse_options(sys.stdin.read() if not sys.stdin.isatty() else "")
    for arg in sys.argv[1:]:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            options[key] = value
        elif arg.startswith("-o") and len(arg) > 2:
            options["action"] = arg[2:]
    rc, out = run(options)
    sys.stdout.write(out)
    return rc
