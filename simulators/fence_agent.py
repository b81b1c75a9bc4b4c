"""`fence_corral_sim`: a fence agent for simulated nodes with the ClusterLabs
fence-agents convention: options as `key=value` lines on stdin (`action`, `plug`
= node name, `ip`/`ipport` = the lab's control API), actions on, off, reboot,
status, monitor, list, metadata; exit 0 on success (status: 0 on, 2 off), 1 on
failure, as fence_ipmilan does.

Talks only HTTP to the lab (`simulators.lab`). Imports nothing from corral's own
packages.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_corral_sim" shortdesc="Fence agent for corral's simulated nodes">
<parameters>
  <parameter name="action" unique="0" required="1"><content type="string" default="reboot"/></parameter>
  <parameter name="ip" unique="0" required="1"><content type="string" default="127.0.0.1"/></parameter>
  <parameter name="ipport" unique="0" required="1"><content type="integer"/></parameter>
  <parameter name="plug" unique="0" required="1"><content type="string"/></parameter>
</parameters>
<actions>
  <action name="on"/><action name="off"/><action name="reboot"/><action name="status"/>
  <action name="monitor"/><action name="list"/><action name="metadata"/>
</actions>
</resource-agent>
"""


def parse_options(text: str) -> dict[str, str]:
    options = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        options[key.strip()] = value.strip()
    return options


def _call(base: str, path: str, body: dict[str, str] | None) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path,
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if data is not None else "GET",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, object] = json.loads(resp.read())
        return result


def run(options: dict[str, str]) -> tuple[int, str]:
    action = options.get("action", "reboot")
    if action == "metadata":
        return 0, METADATA
    base = f"http://{options.get('ip', '127.0.0.1')}:{options.get('ipport', '')}"
    plug = options.get("plug", "")
    try:
        if action in ("list", "monitor"):
            status = _call(base, "/status", None)
            nodes = status.get("nodes", {})
            if action == "monitor":
                return 0, ""
            assert isinstance(nodes, dict)
            return 0, "".join(f"{n},\n" for n in sorted(nodes))
        if not plug:
            return 1, "Failed: You have to enter plug number or machine identification\n"
        if action in ("on", "off", "reboot"):
            _call(base, "/power", {"node": plug, "action": action})
            state = _call(base, "/power", {"node": plug, "action": "status"})
            want = "off" if action == "off" else "on"
            if state.get("power") != want:
                return 1, f"Failed: Timed out waiting to power {want.upper()}\n"
            return 0, "Success: Powered OFF\n" if want == "off" else "Success: Powered ON\n"
        if action == "status":
            state = _call(base, "/power", {"node": plug, "action": "status"})
            if state.get("power") == "off":
                return 2, "Status: OFF\n"
            return 0, "Status: ON\n"
    except urllib.error.HTTPError as exc:
        return 1, f"Failed: {exc.code} {exc.read().decode(errors='replace')[:200]}\n"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return 1, f"Failed: Unable to connect/login to fencing device ({exc})\n"
    return 1, f"Failed: unknown action {action}\n"


def main() -> int:
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


if __name__ == "__main__":
    sys.exit(main())
