"""`fence_corral_sim`: a fence agent for simulated nodes with the ClusterLabs
fence-agents convention (`simulators.fence_convention`): options `action`, `plug`
= node name, `ip`/`ipport` = the lab's control API; actions on, off, reboot,
status, monitor, list, metadata.

Talks only HTTP to the lab (`simulators.lab`). Imports nothing from corral's own
packages but the convention.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from simulators.fence_convention import agent_main, metadata

METADATA = metadata(
    name="fence_corral_sim",
    shortdesc="Fence agent for corral's simulated nodes",
    parameters=(("ip", "string", "127.0.0.1"), ("ipport", "integer", ""), ("plug", "string", "")),
)


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
    return agent_main(run)


if __name__ == "__main__":
    sys.exit(main())
