"""Node VMs: Debian nodes booted under qemu from the cached node image
(`devtools.nodevm.image`), each with its own qcow2 overlay (so its own SSH host
keys, made on first boot), a second virtual disk for the volume group, a
management NIC on user-mode networking with its SSH port forwarded to loopback,
and a replication NIC on one userspace switch (vde_switch, reached through a unix
socket: no bridge, no address on this host). Every process and file lives under
one state directory whose name carries the worktree's name; stopping the set
removes it.

Starts and stops processes; knows nothing of corral. The fence agent
(`devtools.nodevm.fence_qmp`) powers the same VMs off and on from the JSON each
node leaves in the state directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.nodevm.image import NodeImage, apt_install, repo_root
from devtools.nodevm.qmp_sync import qmp_command

REPLICATION_NETWORK = "10.231.0.0/16"
REPLICATION_PREFIX = "10.231.1."


def accel() -> str:
    """KVM where the host has real KVM; TCG otherwise (this machine's /dev/kvm is
    kvm_pvm, under which a stock kernel hangs)."""
    forced = os.environ.get("CORRAL_NODEVM_ACCEL")
    if forced:
        return forced
    if not os.path.exists("/dev/kvm") or os.path.exists("/sys/module/kvm_pvm"):
        return "tcg"
    flags = Path("/proc/cpuinfo").read_text()
    return "kvm" if (" vmx" in flags or " svm" in flags) else "tcg"


def worktree_tag() -> str:
    return repo_root().name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class NodeVm:
    name: str
    index: int
    directory: Path
    ssh_port: int
    replication_address: str
    memory_mib: int
    volume_group: str | None

    @property
    def qmp_path(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def serial_log(self) -> Path:
        return self.directory / "serial.log"

    @property
    def spec_file(self) -> Path:
        return self.directory.parent / f"{self.name}.json"

    def pid(self) -> int | None:
        return running_pid(self.pidfile)


def running_pid(pidfile: Path) -> int | None:
    """The pid in `pidfile` if that process is alive and is a qemu."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"qemu-system" in cmdline else None


@dataclass
class NodeVmSet:
    """Three (or more) node VMs on one replication switch."""

    image: NodeImage
    state_dir: Path
    authorized_keys: list[str]
    names: tuple[str, ...] = ("node1", "node2", "node3")
    memory_mib: int = 512
    data_disk: str = "2G"
    volume_group: str | None = "corral"
    without_volume_group: frozenset[str] = frozenset()
    nice: int = 10
    nodes: dict[str, NodeVm] = field(default_factory=dict)

    @classmethod
    def create(
        cls, image: NodeImage, *, authorized_keys: list[str], run_name: str = "", **kw: object
    ) -> NodeVmSet:
        apt_install(["vde2", "qemu-system-x86", "qemu-utils"])
        tag = f"{worktree_tag()}-{run_name or os.getpid()}"
        state_dir = repo_root() / "var" / "nodevm" / tag
        shutil.rmtree(state_dir, ignore_errors=True)
        state_dir.mkdir(parents=True)
        return cls(image=image, state_dir=state_dir, authorized_keys=authorized_keys, **kw)  # type: ignore[arg-type]

    @property
    def switch_socket(self) -> Path:
        return self.state_dir / "switch"

    @property
    def switch_pidfile(self) -> Path:
        return self.state_dir / "switch.pid"

    @property
    def tag(self) -> str:
        return self.state_dir.name

    def hosts(self) -> dict[str, str]:
        return {n.name: n.replication_address for n in self.nodes.values()}

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        _run(
            "vde_switch", "--sock", str(self.switch_socket), "--daemon",
            "--pidfile", str(self.switch_pidfile), "--mgmt", str(self.state_dir / "switch.mgmt"),
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not (self.switch_socket / "ctl").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("vde_switch did not start")
            time.sleep(0.05)
        for i, name in enumerate(self.names, start=1):
            node = NodeVm(
                name=name,
                index=i,
                directory=self.state_dir / name,
                ssh_port=free_port(),
                replication_address=f"{REPLICATION_PREFIX}{i}",
                memory_mib=self.memory_mib,
                volume_group=None if name in self.without_volume_group else self.volume_group,
            )
            node.directory.mkdir()
            _run(
                "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                "-b", str(self.image.disk), str(node.directory / "root.qcow2"),
            )  # fmt: skip
            _run(
                "qemu-img", "create", "-q", "-f", "qcow2",
                str(node.directory / "data.qcow2"), self.data_disk,
            )  # fmt: skip
            self.nodes[name] = node
        for node in self.nodes.values():
            self._write_spec(node)
            power_on(node.spec_file)

    def _write_spec(self, node: NodeVm) -> None:
        mgmt_mac = f"52:54:00:c0:00:{node.index:02x}"
        repl_mac = f"52:54:00:c1:00:{node.index:02x}"
        config = {
            "hostname": node.name,
            "hosts": self.hosts(),
            "management_mac": mgmt_mac,
            "replication": {
                "mac": repl_mac,
                "address": f"{node.replication_address}/24",
                "network": REPLICATION_NETWORK,
            },
            "authorized_keys": self.authorized_keys,
            "volume_group": (
                {"name": node.volume_group, "device": "/dev/vdb"} if node.volume_group else None
            ),
        }
        cfg_file = node.directory / "node.json"
        cfg_file.write_text(json.dumps(config, indent=2))
        mode = accel()
        argv = [
            "qemu-system-x86_64",
            "-name", f"corral-{self.tag}-{node.name}",
            "-machine", "q35",
            "-accel", "tcg,tb-size=256" if mode == "tcg" else mode,
            "-cpu", "max" if mode == "tcg" else "host",
            "-m", str(node.memory_mib),
            "-smp", "1",
            "-nodefaults",
            "-display", "none",
            "-daemonize",
            "-pidfile", str(node.pidfile),
            "-qmp", f"unix:{node.qmp_path},server=on,wait=off",
            "-serial", f"file:{node.serial_log}",
            "-kernel", str(self.image.kernel),
            "-initrd", str(self.image.initrd),
            "-append",
            "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet loglevel=3 "
            "systemd.show_status=0 mitigations=off",
            "-drive", f"file={node.directory / 'root.qcow2'},if=virtio,format=qcow2,cache=unsafe",
            "-drive", f"file={node.directory / 'data.qcow2'},if=virtio,format=qcow2,cache=unsafe",
            "-netdev", f"user,id=mgmt,hostfwd=tcp:127.0.0.1:{node.ssh_port}-:22",
            "-device", f"virtio-net-pci,netdev=mgmt,mac={mgmt_mac}",
            "-netdev", f"vde,id=repl,sock={self.switch_socket}",
            "-device", f"virtio-net-pci,netdev=repl,mac={repl_mac}",
            "-fw_cfg", f"name=opt/corral/node,file={cfg_file}",
            "-device", "virtio-rng-pci",
        ]  # fmt: skip
        spec = {
            "name": node.name,
            "argv": argv,
            "nice": self.nice,
            "pidfile": str(node.pidfile),
            "qmp": str(node.qmp_path),
            "ssh_port": node.ssh_port,
            "qmp_group": os.environ.get("CORRAL_NODEVM_QMP_GROUP") or None,
        }
        node.spec_file.write_text(json.dumps(spec, indent=2))

    def stop(self) -> None:
        for node in self.nodes.values():
            power_off(node.spec_file)
        try:
            pid = int(self.switch_pidfile.read_text().strip())
            if b"vde_switch" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
                _wait_gone(pid, 5)
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def crash(self, name: str) -> None:
        """The node VM dies at once, as a host losing power does: SIGKILL."""
        pid = self.nodes[name].pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 10)

    def power_on(self, name: str) -> None:
        power_on(self.nodes[name].spec_file)

    def wait_ssh(self, name: str, *, timeout: float = 240.0) -> float:
        """Seconds until the node's sshd answers with its banner."""
        node = self.nodes[name]
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if node.pid() is None:
                raise RuntimeError(f"{name}: qemu exited; see {node.serial_log}")
            try:
                with socket.create_connection(("127.0.0.1", node.ssh_port), timeout=5) as s:
                    s.settimeout(10)
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{name}: no SSH banner after {timeout:.0f} s; see {node.serial_log}")


# ---------------------------------------------------------------- power, by spec file
# (shared with the fence agent, which has only the spec file to go on)


def power_on(spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    if running_pid(Path(spec["pidfile"])) is not None:
        return
    Path(spec["qmp"]).unlink(missing_ok=True)
    # The niceness is absolute (the set's `nice`), whoever powers the node on: a
    # test already under `nice` would otherwise push the VMs to 19, where a
    # loaded host starves them (a probe of minutes).
    lower = int(spec.get("nice", 0)) - os.nice(0)
    argv = ["nice", "-n", str(lower), *spec["argv"]] if lower > 0 else spec["argv"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"qemu for {spec['name']} did not start: {proc.stderr.strip()}")
    open_qmp_to_group(Path(spec["qmp"]), spec.get("qmp_group"))


def open_qmp_to_group(qmp: Path, group: str | None) -> None:
    """qemu (run as root) makes its QMP socket 0755 root:root, and connecting to a
    unix socket needs write permission: an orchestrator running as an unprivileged
    account could never fence through it. The socket is made 0660, group `group`
    (CORRAL_NODEVM_QMP_GROUP when the set was made; root's group otherwise), so
    that group's members can query and power off over QMP."""
    os.chmod(qmp, 0o660)
    if group:
        shutil.chown(qmp, group=group)


def power_off(spec_file: Path, *, timeout: float = 10.0) -> None:
    """Off at once (QMP quit, the process exits without a guest shutdown); SIGKILL
    if QMP does not answer. Returns only when the process is gone."""
    spec = json.loads(spec_file.read_text())
    pid = running_pid(Path(spec["pidfile"]))
    if pid is None:
        return
    try:
        qmp_command(spec["qmp"], "quit", timeout=3)
    except (OSError, ValueError, TimeoutError):
        pass
    if not _wait_gone(pid, timeout):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, timeout)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        try:
            if stat.read_text().split(") ", 1)[1].startswith("Z"):
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.05)
    return False


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {proc.stderr.strip()}")
