#!/usr/bin/python3
"""Runs inside a corral node VM at every boot, before sshd (the image's
corral-node-setup.service): applies the per-node settings the fixture hands the
VM through QEMU's fw_cfg (opt/corral/node, JSON): hostname, /etc/hosts, the
management NIC (user-mode networking: static 10.0.2.15), the replication NIC, root's
authorized keys, fresh SSH host keys on first boot, and the volume group on the
second disk when asked for.

Copied into the image as a file, never imported: standard library only, no corral
package. It must not touch anything the settings do not name.
"""

import json
import os
import pathlib
import subprocess
import time

CFG = pathlib.Path("/sys/firmware/qemu_fw_cfg/by_name/opt/corral/node/raw")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def nic_by_mac(mac: str, wait_s: float = 20.0) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        for dev in sorted(os.listdir("/sys/class/net")):
            try:
                addr = pathlib.Path(f"/sys/class/net/{dev}/address").read_text().strip()
            except OSError:
                continue
            if addr.lower() == mac.lower():
                return dev
        if time.monotonic() > deadline:
            raise SystemExit(f"corral-node-setup: no NIC with MAC {mac}")
        time.sleep(0.2)


def main() -> None:
    run("modprobe", "qemu_fw_cfg", check=False)
    for _ in range(50):
        if CFG.exists():
            break
        time.sleep(0.1)
    cfg = json.loads(CFG.read_text())
    name = cfg["hostname"]
    pathlib.Path("/etc/hostname").write_text(name + "\n")
    run("hostname", name)
    hosts = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{name}"]
    hosts += [f"{addr}\t{host}" for host, addr in sorted(cfg.get("hosts", {}).items())]
    pathlib.Path("/etc/hosts").write_text("\n".join(hosts) + "\n")

    run("ip", "link", "set", "lo", "up")
    mgmt = nic_by_mac(cfg["management_mac"])
    run("ip", "link", "set", mgmt, "up")
    run("ip", "addr", "replace", "10.0.2.15/24", "dev", mgmt)
    run("ip", "route", "replace", "default", "via", "10.0.2.2", "dev", mgmt)
    pathlib.Path("/etc/resolv.conf").write_text("nameserver 10.0.2.3\n")
    repl = cfg.get("replication")
    if repl:
        dev = nic_by_mac(repl["mac"])
        run("ip", "link", "set", dev, "mtu", str(repl.get("mtu", 1500)), "up")
        run("ip", "addr", "replace", repl["address"], "dev", dev)
        # Replication traffic never leaves through user-mode networking, even with
        # this NIC down: the whole replication range is unreachable otherwise.
        run("ip", "route", "replace", "prohibit", repl["network"], "metric", "4000")

    ssh = pathlib.Path("/root/.ssh")
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text("".join(k.strip() + "\n" for k in cfg["authorized_keys"]))
    os.chmod(ssh / "authorized_keys", 0o600)
    if not pathlib.Path("/etc/ssh/ssh_host_ed25519_key").exists():
        # ed25519 only: an RSA key takes tens of seconds under TCG
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/etc/ssh/ssh_host_ed25519_key")

    vg = cfg.get("volume_group")
    if vg and run("vgs", vg["name"], check=False).returncode != 0:
        run("pvcreate", "-q", "-y", "-ff", vg["device"])
        run("vgcreate", "-q", vg["name"], vg["device"])


if __name__ == "__main__":
    main()
