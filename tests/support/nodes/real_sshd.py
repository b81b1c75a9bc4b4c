"""A real node account on this machine, without changing this machine: a real
OpenSSH `sshd` and real `sudo`, run in a private mount namespace (`unshare -m`)
where /etc/passwd, /etc/group, /etc/shadow, /etc/sudoers.d, /etc/drbd.d, /run,
/var/lib, /usr/local/lib and /dev are the test's own copies. Inside it, deploy/'s
install script installs the built node helper and deploy/'s sudoers rule for a
`corral` account that logs in with a key. /dev holds the few devices qemu needs
and /dev/drbdN links to raw files, so a real qemu can run on "DRBD devices".

Needs root, `unshare`, sshd, sudo and visudo; `skip_reason()` says which is missing.
Everything lives under the test's temporary directory and goes when sshd stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

REPO = Path(__file__).resolve().parents[3]
ACCOUNT = "corral"
UID = 64123  # unused on this machine; only the namespace's passwd knows it
DEVICES = ("null", "zero", "random", "urandom", "full", "tty", "kvm")


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a mount namespace with its own passwd, sudoers and /run)"
    for tool, package in (
        ("unshare", "util-linux"),
        ("/usr/sbin/sshd", "openssh-server"),
        ("sudo", "sudo"),
        ("visudo", "sudo"),
        ("/usr/bin/python3", "python3"),
    ):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian package {package})"
    return None


@dataclass
class RealNode:
    root: Path
    port: int
    known_hosts: Path
    client_key: Path
    process: subprocess.Popen[bytes]
    disks: dict[int, Path] = field(default_factory=dict)

    async def connect(self) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            "127.0.0.1",
            self.port,
            username=ACCOUNT,
            client_keys=[str(self.client_key)],
            known_hosts=str(self.known_hosts),
        )

    def qemu_pids(self, name: str) -> list[int]:
        """qemu processes started for VM `name` (our own: a name only we use)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"qemu-system-x86_64") and name.encode() in argv:
                pids.append(int(entry.name))
        return pids

    def stop(self, vm_names: tuple[str, ...] = ()) -> None:
        for name in vm_names:
            for pid in self.qemu_pids(name):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _copy_with(path: str, line: str, target: Path) -> None:
    text = Path(path).read_text()
    target.write_text(text + ("" if text.endswith("\n") else "\n") + line + "\n")


def start_real_node(tmp: Path, *, minors: tuple[int, ...] = ()) -> RealNode:
    """sshd on a free loopback port, in its own mount namespace."""
    root = tmp / "node"
    for d in ("etc/sudoers.d", "etc/drbd.d", "keys", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    _copy_with("/etc/passwd", f"{ACCOUNT}:x:{UID}:{UID}::/run/home:/bin/sh", root / "etc/passwd")
    _copy_with("/etc/group", f"{ACCOUNT}:x:{UID}:", root / "etc/group")
    _copy_with("/etc/shadow", f"{ACCOUNT}:*:20000:0:99999:7:::", root / "etc/shadow")
    (root / "etc/shadow").chmod(0o640)

    client = asyncssh.generate_private_key("ssh-ed25519")
    client_key = tmp / "client_key"
    client.write_private_key(str(client_key))
    client_key.chmod(0o600)
    (root / "keys" / ACCOUNT).write_bytes(client.export_public_key())
    host_key = root / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    port = _free_port()
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text()}")
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile /run/keys/%u\nStrictModes no\nUsePAM no\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PidFile {root}/sshd.pid\nAllowStreamLocalForwarding yes\nLogLevel ERROR\n"
    )
    helper = tmp / "corral-node-helper"
    subprocess.run(
        [str(REPO / ".venv/bin/python"), "-m", "nodehelper.bundle", "-o", str(helper)],
        check=True,
        cwd=REPO,
    )
    disks = {}
    for minor in minors:
        disks[minor] = tmp / f"drbd{minor}.raw"
        disks[minor].write_bytes(b"\0" * 16 * 1024 * 1024)
    links = "".join(f"ln -s {disks[m]} $D/drbd{m}\n" for m in minors)
    devices = "".join(
        f"[ -e /dev/{d} ] && touch $D/{d} && mount --bind /dev/{d} $D/{d}\n" for d in DEVICES
    )
    (root / "setup.sh").write_text(
        f"""set -eu
R={root}
for f in passwd group shadow; do mount --bind $R/etc/$f /etc/$f; done
mount --bind $R/etc/sudoers.d /etc/sudoers.d
mount --bind $R/etc/drbd.d /etc/drbd.d
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -m 0755 /run/sshd /run/keys
cp $R/keys/{ACCOUNT} /run/keys/ && chmod 0644 /run/keys/{ACCOUNT}
mkdir -m 0700 /run/home && chown {UID}:{UID} /run/home
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mount -t tmpfs -o mode=0755 tmpfs /usr/local/lib
D=$R/dev
mount -t tmpfs -o mode=0755 tmpfs $D
{devices}{links}mkdir $D/pts && mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts $D/pts
ln -s pts/ptmx $D/ptmx
mount --rbind $D /dev
sh {REPO}/deploy/node/install-node-helper {helper} {ACCOUNT} >/dev/null
exec /usr/sbin/sshd -D -e -f $R/sshd_config
"""
    )
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "/bin/sh", str(root / "setup.sh")],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "sshd.log", "wb"),  # noqa: SIM115 - kept open for the process
    )
    node = RealNode(
        root=root,
        port=port,
        known_hosts=known_hosts,
        client_key=client_key,
        process=process,
        disks=disks,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd did not start: {(tmp / 'sshd.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return node
        except OSError:
            time.sleep(0.05)
    node.stop()
    raise RuntimeError("sshd did not listen within 15 s")
