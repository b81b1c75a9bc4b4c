"""iproute2's `ip` on a simulated host, as much of it as the node helper uses:
`ip -j link show type bridge` (the host's bridges, in ip's JSON) and
`ip link set dev TAP master BRIDGE` / `up` on the taps qemu made for a VM's NICs,
with iproute2's own messages when a device does not exist.

No I/O. Registers itself in `simulators.tools.registry.TOOLS`.
"""

from __future__ import annotations

import json

from simulators.fabric import Fabric, Host, Vm
from simulators.tools.registry import Result, tool


def _owner(h: Host, tap: str) -> Vm | None:
    return next((vm for vm in h.vms.values() if tap in vm.taps), None)


def _link_show(h: Host) -> Result:
    links = [
        {
            "ifindex": 10 + i,
            "ifname": br,
            "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
            "mtu": 1500,
            "qdisc": "noqueue",
            "operstate": "UP",
            "linkmode": "DEFAULT",
            "group": "default",
            "link_type": "ether",
            "address": f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",
            "broadcast": "ff:ff:ff:ff:ff:ff",
        }
        for i, br in enumerate(sorted(h.bridges))
    ]
    # Real iproute2 6.1 (Debian bookworm) prints an empty object for each link the
    # type filter drops (here lo and the two NICs), without separators' spaces:
    # `[{},{},{}]` on a node without bridges. Seen on a real node VM.
    dropped: list[dict[str, object]] = [{}, {}, {}]
    return Result(out=json.dumps([*dropped, *links], separators=(",", ":")) + "\n")


def _link_set(h: Host, argv: list[str]) -> Result:
    # ip link set dev TAP (master BRIDGE | nomaster | up | down)
    if len(argv) < 5 or argv[3] != "dev":
        return Result(rc=255, err='Command line is not complete. Try option "help"\n')
    tap, rest = argv[4], argv[5:]
    vm = _owner(h, tap)
    if vm is None:
        return Result(rc=1, err=f'Cannot find device "{tap}"\n')
    if rest[:1] == ["master"] and len(rest) == 2:
        if rest[1] not in h.bridges:
            return Result(rc=1, err=f'Cannot find device "{rest[1]}"\n')
        vm.taps[tap] = rest[1]
    elif rest == ["nomaster"]:
        vm.taps[tap] = ""
    elif rest not in (["up"], ["down"]):
        return Result(
            rc=255, err=f'Error: either "dev" is duplicate, or "{" ".join(rest)}" is a garbage.\n'
        )
    return Result()


@tool("ip")
def _ip(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    if argv[1:] == ["-j", "link", "show", "type", "bridge"]:
        return _link_show(h)
    if argv[1:3] == ["link", "set"]:
        return _link_set(h, argv)
    return Result(rc=255, err=f'Object "{" ".join(argv[1:2])}" is unknown, try "ip help".\n')
