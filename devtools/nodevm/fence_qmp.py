"""`fence_corral_qmp`: a fence agent for node VMs (`devtools.nodevm.vms`) with the
ClusterLabs fence-agents convention (`simulators.fence_convention`): options
`action`, `plug` = the node VM's name, `statedir` = the VM set's state directory;
actions on, off, reboot, status, monitor, list, metadata.

Off is immediate (QMP `quit`, then SIGKILL if QMP does not answer) and is reported
only once the qemu process is gone; status asks QMP and reports OFF only when no
qemu process is left, so a hung VM is never called off.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from devtools.nodevm.qmp_sync import qmp_command
from devtools.nodevm.vms import power_off, power_on, running_pid
from simulators.fence_convention import agent_main, metadata

METADATA = metadata(
    name="fence_corral_qmp",
    shortdesc="Fence agent for corral's node VMs (QMP)",
    parameters=(("plug", "string", ""), ("statedir", "string", "")),
)


def _status(spec_file: Path) -> str:
    spec = json.loads(spec_file.read_text())
    try:
        reply = qmp_command(spec["qmp"], "query-status", timeout=3)
        if "return" in reply:
            return "on"
    except (OSError, ValueError, TimeoutError):
        pass
    return "on" if running_pid(Path(spec["pidfile"])) is not None else "off"


def run(options: dict[str, str]) -> tuple[int, str]:
    action = options.get("action", "reboot")
    if action == "metadata":
        return 0, METADATA
    statedir = Path(options.get("statedir", ""))
    if not options.get("statedir") or not statedir.is_dir():
        return 1, f"Failed: statedir {str(statedir)!r} is not a node-VM state directory\n"
    if action in ("list", "monitor"):
        plugs = sorted(p.stem for p in statedir.glob("*.json"))
        return 0, "" if action == "monitor" else "".join(f"{p},\n" for p in plugs)
    plug = options.get("plug", "")
    spec_file = statedir / f"{plug}.json"
    if not plug or "/" in plug or not spec_file.is_file():
        return 1, "Failed: You have to enter plug number or machine identification\n"
    try:
        if action == "status":
            state = _status(spec_file)
            return (0, "Status: ON\n") if state == "on" else (2, "Status: OFF\n")
        if action in ("off", "reboot"):
            power_off(spec_file)
            if _status(spec_file) != "off":
                return 1, "Failed: Timed out waiting to power OFF\n"
            if action == "off":
                return 0, "Success: Powered OFF\n"
        if action in ("on", "reboot"):
            power_on(spec_file)
            if _status(spec_file) != "on":
                return 1, "Failed: Timed out waiting to power ON\n"
            return 0, "Success: Powered ON\n"
    except (OSError, RuntimeError, ValueError) as exc:
        return 1, f"Failed: {exc}\n"
    return 1, f"Failed: unknown action {action}\n"


def main() -> int:
    return agent_main(run)


if __name__ == "__main__":
    sys.exit(main())
