"""QMP hotplug on a simulated VM, as qemu 7.2 answers it: netdev_add/netdev_del
(a tap netdev makes its tap), device_add/device_del (ids and PCI slots unique, the
backend must exist; a deleted device is released at once, as a guest with ACPI
hotplug does), blockdev-add/blockdev-del of a host device (a DRBD minor that is
up and Primary on the host). Errors carry qemu's own descriptions.

No I/O. Used by the node helper's environment on simulated hosts.
"""

from __future__ import annotations

import re
from typing import Any

from simulators.fabric import Fabric, Host, Vm


def _error(desc: str) -> dict[str, Any]:
    return {"error": {"class": "GenericError", "desc": desc}}


def devices_from_argv(argv: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(device id -> slot, netdev id -> tap) of a VM's command line."""
    devices: dict[str, str] = {}
    netdevs: dict[str, str] = {}
    for i, arg in enumerate(argv[:-1]):
        opts = dict(p.split("=", 1) for p in argv[i + 1].split(",") if "=" in p)
        if arg == "-device" and "id" in opts:
            devices[opts["id"]] = opts.get("addr", "")
        elif arg == "-netdev" and "id" in opts:
            netdevs[opts["id"]] = opts.get("ifname", "")
    return devices, netdevs


def _driver_of(device_id: str) -> str:
    """The qemu type of a device the simulator placed by id (it records slots only)."""
    for prefix, driver in (("disk-", "virtio-blk-pci"), ("nic-", "virtio-net-pci")):
        if device_id.startswith(prefix):
            return driver
    return "pci-device"


def _device_add(h: Host, vm: Vm, args: dict[str, Any]) -> dict[str, Any]:
    ident, addr = str(args.get("id", "")), str(args.get("addr", ""))
    if ident in vm.devices:
        return _error(f"Duplicate device ID '{ident}'")
    holder = next((d for d, a in vm.devices.items() if addr and a == addr), None)
    if holder is not None:
        return _error(
            f"PCI: slot {int(addr, 16)} function 0 not available for "
            f"{args.get('driver')}, in use by {_driver_of(holder)},id={holder}"
        )
    if "netdev" in args and args["netdev"] not in vm.netdevs:
        return _error(f"Property '{args.get('driver')}.netdev' can't find value '{args['netdev']}'")
    if "drive" in args and args["drive"] not in vm.block_nodes:
        return _error(f"Property '{args.get('driver')}.drive' can't find value '{args['drive']}'")
    vm.devices[ident] = addr
    return {"return": {}}


def _blockdev_add(h: Host, vm: Vm, args: dict[str, Any]) -> dict[str, Any]:
    node = str(args.get("node-name", ""))
    path = str((args.get("file") or {}).get("filename", ""))
    if node in vm.block_nodes:
        return _error(f"Duplicate nodes with node-name='{node}'")
    m = re.fullmatch(r"/dev/drbd(\d+)", path)
    copy = next(
        (
            c
            for c in h.copies.values()
            if m and c.up and c.config.hosts[h.name].minor == int(m.group(1))
        ),
        None,
    )
    if copy is None:
        return _error(f"Could not open '{path}': No such file or directory")
    if copy.role != "Primary":
        return _error(f"Could not open '{path}': Wrong medium type")
    vm.block_nodes[node] = path
    vm.drives.append(path)
    return {"return": {}}


def _netdev_add(h: Host, vm: Vm, args: dict[str, Any]) -> dict[str, Any]:
    ident = str(args.get("id", ""))
    if ident in vm.netdevs:
        return _error(f"Duplicate ID '{ident}' for netdev")
    vm.netdevs[ident] = str(args.get("ifname", ""))
    if vm.netdevs[ident]:
        vm.taps[vm.netdevs[ident]] = ""
    return {"return": {}}


def _netdev_del(h: Host, vm: Vm, args: dict[str, Any]) -> dict[str, Any]:
    tap = vm.netdevs.pop(str(args.get("id", "")), None)
    if tap is None:
        return _error(f"Device '{args.get('id')}' not found")
    vm.taps.pop(tap, None)
    return {"return": {}}


def _device_del(h: Host, vm: Vm, args: dict[str, Any]) -> dict[str, Any]:
    if vm.devices.pop(str(args.get("id", "")), None) is None:
        return _error(f"Device '{args.get('id')}' not found")
    return {"return": {}}


def _blockdev_del(h: Host, vm: Vm, args: dict[str, Any]) -> dict[str, Any]:
    path = vm.block_nodes.pop(str(args.get("node-name", "")), None)
    if path is None:
        return _error(f"Failed to find node with node-name='{args.get('node-name')}'")
    vm.drives.remove(path)
    return {"return": {}}


def _query_status(h: Host, vm: Vm, args: dict[str, Any]) -> dict[str, Any]:
    return {"return": {"status": vm.status, "running": vm.status == "running"}}


_COMMANDS = {
    "netdev_add": _netdev_add,
    "netdev_del": _netdev_del,
    "device_add": _device_add,
    "device_del": _device_del,
    "blockdev-add": _blockdev_add,
    "blockdev-del": _blockdev_del,
    "query-status": _query_status,
}


def answer(f: Fabric, h: Host, vm: Vm, command: str, args: dict[str, Any]) -> dict[str, Any]:
    handler = _COMMANDS.get(command)
    if handler is None:
        return _error(f"The command {command} has not been found")
    f.record(h.name, f"qmp {command} {vm.name}")
    return handler(h, vm, args)
