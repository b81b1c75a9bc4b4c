"""qemu-system-x86_64 on a simulated host (-daemonize, -pidfile, -qmp, the VM's
devices), and pgrep and kill over the host's VM processes.

No I/O: operates on `simulators.fabric` state.
"""

from __future__ import annotations

import re

from simulators.fabric import Fabric, Host, Vm
from simulators.hotplug_qmp import devices_from_argv
from simulators.tools.registry import Result, tool


def _opt(argv: list[str], name: str) -> str | None:
    if name in argv:
        i = argv.index(name)
        if i + 1 < len(argv):
            return argv[i + 1]
    return None


def _memory(value: str) -> int:
    m = re.fullmatch(r"(?:size=)?(\d+)([MG]?)", value)
    if not m:
        raise ValueError(value)
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


@tool("qemu-system-x86_64")
def _qemu(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    name = _opt(argv, "-name")
    pidfile = _opt(argv, "-pidfile")
    qmp = _opt(argv, "-qmp")
    if not name or not pidfile or not qmp or "-daemonize" not in argv:
        return Result(
            rc=1,
            err="qemu-system-x86_64: corral's simulator needs -name, -daemonize, -pidfile and -qmp\n",
        )
    name = name.split(",")[0].removeprefix("guest=")
    try:
        memory = _memory(_opt(argv, "-m") or "128")
        vcpus = int((_opt(argv, "-smp") or "1").split(",")[0])
    except ValueError:
        return Result(rc=1, err="qemu-system-x86_64: invalid -m or -smp\n")
    drives = []
    for i, a in enumerate(argv):
        if a == "-drive" and i + 1 < len(argv):
            for part in argv[i + 1].split(","):
                if part.startswith("file="):
                    drives.append(part[5:])
    f.tick_host(h.name)
    for drive in drives:
        m = re.fullmatch(r"/dev/drbd(\d+)", drive)
        if not m:
            continue
        minor = int(m.group(1))
        copy = next(
            (c for c in h.copies.values() if c.up and c.config.hosts[h.name].minor == minor), None
        )
        if copy is None:
            return Result(
                rc=1,
                err=f"qemu-system-x86_64: -drive file={drive}: Could not open '{drive}': No such file or directory\n",
            )
        if copy.role != "Primary":
            return Result(
                rc=1,
                err=f"qemu-system-x86_64: -drive file={drive}: Could not open '{drive}': Wrong medium type\n",
            )
        holder = h.holder_of(minor)
        if holder is not None:
            return Result(
                rc=1, err=f'qemu-system-x86_64: -drive file={drive}: Failed to get "write" lock\n'
            )
    if name in h.vms:
        return Result(
            rc=1,
            err=f"qemu-system-x86_64: -qmp {qmp}: Failed to bind socket: Address already in use\n",
        )
    if memory > h.memory_mib - h.memory_used_mib:
        return Result(
            rc=1,
            err="qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory\n",
        )
    incoming = None
    inc = _opt(argv, "-incoming")
    if inc:
        m = re.fullmatch(r"tcp:([^:]*):(\d+)", inc)
        if not m:
            return Result(
                rc=1, err=f"qemu-system-x86_64: -incoming {inc}: unsupported in the simulator\n"
            )
        incoming = (m.group(1) or "0.0.0.0", int(m.group(2)))
    qmp_path = qmp.removeprefix("unix:").split(",")[0]
    devices, netdevs = devices_from_argv(argv)
    vm = Vm(
        name=name,
        pid=f.next_pid(),
        memory_mib=memory,
        vcpus=vcpus,
        drives=drives,
        qmp_path=qmp_path,
        pidfile=pidfile,
        argv=list(argv),
        status="inmigrate" if incoming else ("paused" if "-S" in argv else "running"),
        incoming=incoming,
        taps={tap: "" for tap in netdevs.values() if tap},
        devices=devices,
        netdevs=netdevs,
    )
    h.vms[name] = vm
    h.files[pidfile] = f"{vm.pid}\n".encode()
    return Result()


@tool("pgrep")
def _pgrep(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    pattern = argv[-1] if len(argv) > 1 else ""
    full = "-a" in argv or "-af" in argv or "-fa" in argv
    lines = []
    for vm in sorted(h.vms.values(), key=lambda v: v.pid):
        cmdline = " ".join(vm.argv)
        if re.search(pattern, cmdline):
            lines.append(f"{vm.pid} {cmdline}" if full else str(vm.pid))
    if not lines:
        return Result(rc=1)
    return Result(out="\n".join(lines) + "\n")


@tool("kill")
def _kill(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    pids = [a for a in argv[1:] if not a.startswith("-")]
    for pid in pids:
        vm = next((v for v in h.vms.values() if str(v.pid) == pid), None)
        if vm is None:
            return Result(rc=1, err=f"bash: line 1: kill: ({pid}) - No such process\n")
        if "-0" in argv:
            continue
        del h.vms[vm.name]
        h.files.pop(vm.pidfile, None)
    return Result()
