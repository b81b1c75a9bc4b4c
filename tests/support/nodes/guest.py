"""A tiny real guest for qemu tests: Debian's cloud kernel (from its package,
fetched with `apt-get download` and cached under var/guest/) and an initramfs
built here from busybox-static and the kernel's virtio modules. Its /init takes
its address from the kernel command line (`corral.ip=ADDR/PREFIX`), serves HTTP
on port 80 (`hello from NAME`), prints `corral-guest-ready` and runs a shell on
the serial console, where a test reads /sys/class/net and /sys/block.

No product code; skips the test (naming the package) when apt cannot fetch.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

VAR = Path(__file__).resolve().parents[3] / "var"
KERNEL_PACKAGE = "linux-image-cloud-amd64"
MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/block/virtio_blk.ko",
    "fs/fat/fat.ko",
    "fs/fat/vfat.ko",
    "fs/nls/nls_cp437.ko",
    "fs/nls/nls_ascii.ko",
)
INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/bin /usr/sbin /www /tmp
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in MODULES; do insmod /lib/modules/$m.ko; done
addr=$(sed -n 's/.*corral\\.ip=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
name=corral-guest
if [ -z "$addr" ]; then
  mkdir -p /seed
  for d in /sys/block/vd*; do
    mount -t vfat -o ro,iocharset=ascii "/dev/${d##*/}" /seed 2>/dev/null || continue
    [ -f /seed/meta-data ] && break
    umount /seed
  done
  name=$(sed -n 's/.*"local-hostname": "\\([^"]*\\)".*/\\1/p' /seed/meta-data)
  addr=$(sed -n 's/.*"\\([0-9.]*\\/[0-9]*\\)".*/\\1/p' /seed/network-config | head -n 1)
  echo "corral-seed hostname=$name address=$addr"
  echo "corral-os-disk $(head -c 64 /dev/vda | head -n 1)"
fi
ip link set lo up
ip link set eth0 up
ip addr add "$addr" dev eth0
hostname "$name"
echo "hello from $(hostname)" > /www/index.html
httpd -p 80 -h /www
echo "corral-guest-ready $addr"
exec setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'
"""


# The cache is per recipe: a changed /init or module list builds a new initramfs.
CACHE = VAR / ("guest-" + hashlib.sha256((INIT + repr(MODULES)).encode()).hexdigest()[:10])


@dataclass(frozen=True, slots=True)
class GuestKit:
    kernel: Path
    initrd: Path
    busybox: Path  # the host's copy, for ping and wget in the test's namespaces


def _download(dest: Path) -> Path:
    """Fetch and unpack the kernel and busybox packages into dest; the tree."""
    dest.mkdir(parents=True, exist_ok=True)
    debs = dest / "debs"
    debs.mkdir(exist_ok=True)
    try:
        depends = subprocess.run(
            ["apt-cache", "depends", KERNEL_PACKAGE],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        image = next(
            line.split()[1] for line in depends.splitlines() if "Depends: linux-image-" in line
        )
        subprocess.run(
            ["apt-get", "download", image, "busybox-static"],
            cwd=debs,
            capture_output=True,
            check=True,
            timeout=300,
        )
    except (OSError, StopIteration, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot fetch {KERNEL_PACKAGE} and busybox-static with apt: {exc}")
    tree = dest / "tree"
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, timeout=120)
    return tree


def _cpio(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive of (name, mode, data, rdev) entries."""
    out = io.BytesIO()

    def pad(n: int) -> None:
        out.write(b"\0" * (-n % 4))

    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], 1):
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF)
        raw = name.encode() + b"\0"
        header = "070701" + "".join(f"{v:08x}" for v in fields) + f"{len(raw):08x}{0:08x}"
        out.write(header.encode() + raw)
        pad(110 + len(raw))
        out.write(data)
        pad(len(data))
    return out.getvalue()


def guest_kit() -> GuestKit:
    """The kernel, initramfs and busybox, built once and cached under var/guest."""
    kernel, initrd, busybox = CACHE / "vmlinuz", CACHE / "initrd.gz", CACHE / "busybox"
    if kernel.exists() and initrd.exists() and busybox.exists():
        return GuestKit(kernel=kernel, initrd=initrd, busybox=busybox)
    with tempfile.TemporaryDirectory(dir=CACHE.parent if CACHE.parent.exists() else None) as tmp:
        tree = _download(Path(tmp))
        (release,) = [p.name for p in (tree / "lib" / "modules").iterdir()]
        names = " ".join(Path(m).stem for m in MODULES)
        entries: list[tuple[str, int, bytes, int]] = [
            (d, stat.S_IFDIR | 0o755, b"", 0) for d in ("bin", "dev", "lib", "lib/modules")
        ]
        entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5 << 8) | 1))
        bb = (tree / "bin" / "busybox").read_bytes()
        entries.append(("bin/busybox", stat.S_IFREG | 0o755, bb, 0))
        entries.append(("init", stat.S_IFREG | 0o755, INIT.replace("MODULES", names).encode(), 0))
        for module in MODULES:
            data = (tree / "lib" / "modules" / release / "kernel" / module).read_bytes()
            entries.append((f"lib/modules/{Path(module).name}", stat.S_IFREG | 0o644, data, 0))
        CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / "initrd.gz.tmp").write_bytes(gzip.compress(_cpio(entries), compresslevel=6))
        (CACHE / "vmlinuz.tmp").write_bytes((tree / "boot" / f"vmlinuz-{release}").read_bytes())
        (CACHE / "busybox.tmp").write_bytes(bb)
        os.chmod(CACHE / "busybox.tmp", 0o755)
        for path in (initrd, kernel, busybox):
            os.replace(path.with_name(path.name + ".tmp"), path)
    return GuestKit(kernel=kernel, initrd=initrd, busybox=busybox)
