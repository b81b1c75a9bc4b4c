"""The node image: a Debian bookworm root filesystem built from Debian packages only
(mmdebstrap, the distribution kernel with its DRBD 8.4 and device-mapper modules,
lvm2, drbd-utils, openssh-server, python3, sudo, qemu-system-x86, qemu-utils,
iproute2), made
into a qcow2 disk plus the kernel and initramfs to boot it with, and cached under
the repository's ignored var/ by a key over its recipe: a change to the package
list, the build steps or the guest set-up script builds a new image.

Builds only what a node VM boots from; it starts no VM (`devtools.nodevm.vms`).
Needs root (mmdebstrap's root mode, chroot) and apt for its own tools.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
BUILDER_VERSION = 1
PACKAGES = (
    "systemd-sysv",
    "udev",
    "kmod",
    "linux-image-amd64",
    "initramfs-tools",
    "openssh-server",
    "sudo",
    "lvm2",
    "drbd-utils",
    "iproute2",
    "iputils-ping",
    "procps",
    "python3",
    "qemu-system-x86",
    "qemu-utils",  # qemu-img: the node helper's image-write (OS images)
    "apt",
)
# Kernel module trees a node VM never loads (no hardware but virtio): most of the
# kernel package's 400 MiB. drivers/block (drbd), drivers/md (device-mapper),
# drivers/virtio, net/bridge, arch/x86/kvm and the file systems stay.
PRUNED_MODULES = (
    "drivers/gpu",
    "drivers/net/wireless",
    "drivers/net/ethernet",
    "drivers/net/usb",
    "drivers/net/can",
    "drivers/media",
    "drivers/infiniband",
    "drivers/staging",
    "drivers/usb",
    "drivers/bluetooth",
    "drivers/iio",
    "drivers/hid",
    "drivers/input",
    "drivers/isdn",
    "drivers/mtd",
    "drivers/scsi",
    "drivers/target",
    "drivers/nvme",
    "drivers/thunderbolt",
    "drivers/platform",
    "drivers/hwmon",
    "drivers/mfd",
    "drivers/i2c",
    "drivers/video",
    "drivers/ata",
    "drivers/pinctrl",
    "drivers/spi",
    "drivers/gpio",
    "drivers/leds",
    "drivers/power",
    "drivers/misc",
    "drivers/edac",
    "drivers/comedi",
    "drivers/atm",
    "drivers/w1",
    "drivers/mmc",
    "drivers/memstick",
    "drivers/firewire",
    "drivers/pcmcia",
    "drivers/fpga",
    "drivers/rtc",
    "sound",
    "net/wireless",
    "net/mac80211",
    "net/bluetooth",
    "net/netfilter",
    "fs/btrfs",
    "fs/xfs",
    "fs/ocfs2",
    "fs/gfs2",
    "fs/nfs",
    "fs/nfsd",
    "fs/smb",
    "fs/ceph",
    "fs/f2fs",
    "fs/ntfs3",
    "fs/reiserfs",
    "fs/jfs",
)
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/qemu/edk2-*",
)
IMAGE_SIZE = "3G"
HERE = Path(__file__).resolve().parent
GUEST_SETUP = HERE / "guest_setup.py"

SETUP_UNIT = """\
[Unit]
Description=corral node VM: per-node settings from QEMU fw_cfg
After=systemd-udev-trigger.service systemd-modules-load.service local-fs.target
Before=ssh.service network.target
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/corral-node-setup

[Install]
WantedBy=multi-user.target
"""
SSHD_CONF = """\
# corral node VM fixture
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
"""
# Units a node VM must not run: nothing reaches out (NTP pools, apt timers) and
# nothing waits for a network manager the VM does not use.
MASKED = (
    "systemd-networkd-wait-online.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-timesyncd.service",
    "getty@tty1.service",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeImage:
    """A built image: boot it with `kernel`, `initrd` and a qcow2 overlay on `disk`."""

    directory: Path
    disk: Path
    kernel: Path
    initrd: Path
    key: str
    manifest: dict[str, object]


def repo_root() -> Path:
    return HERE.parent.parent


def cache_root() -> Path:
    return Path(os.environ.get("CORRAL_VAR", repo_root() / "var")) / "node-image"


def recipe() -> dict[str, object]:
    return {
        "builder": BUILDER_VERSION,
        "suite": SUITE,
        "packages": list(PACKAGES),
        "pruned": list(PRUNED_MODULES),
        "dpkg": list(DPKG_EXCLUDES),
        "size": IMAGE_SIZE,
        "setup": hashlib.sha256(GUEST_SETUP.read_bytes()).hexdigest(),
        "unit": SETUP_UNIT,
        "sshd": SSHD_CONF,
        "masked": list(MASKED),
    }


def recipe_key() -> str:
    text = json.dumps(recipe(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached() -> NodeImage | None:
    directory = cache_root() / recipe_key()
    manifest = directory / "manifest.json"
    if not manifest.exists():
        return None
    return _image(directory)


def _image(directory: Path) -> NodeImage:
    manifest = json.loads((directory / "manifest.json").read_text())
    return NodeImage(
        directory=directory,
        disk=directory / "root.qcow2",
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        key=directory.name,
        manifest=manifest,
    )


def ensure(*, log: bool = True) -> NodeImage:
    """The image for the current recipe, built first if it is not cached."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / ".lock"):
        image = cached()
        if image is not None:
            return image
        return build(root / recipe_key(), log=log)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(log: bool, text: str) -> None:
    if log:
        print(f"node-image: {text}", file=sys.stderr, flush=True)


def apt_install(packages: list[str], *, attempts: int = 40) -> None:
    """apt-get install, waiting out other apt runs holding the dpkg lock."""
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"needs root to install {' '.join(missing)} with apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    last = ""
    for attempt in range(attempts):
        proc = subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode == 0:
            return
        last = proc.stderr
        if "Unable to locate package" in last and attempt == 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            continue
        if "lock" not in last.lower():
            break
        time.sleep(5)
    raise RuntimeError(f"apt-get install {' '.join(missing)} failed: {last.strip()[-400:]}")


def _installed(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    # "unknown ok not-installed" (known to dpkg, removed) also ends in "installed"
    return proc.returncode == 0 and proc.stdout == "install ok installed"


def _mirror() -> list[str]:
    """The host's own Debian sources (deb822 or one-line), else deb.debian.org."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if path.exists() and "debian" in path.read_text():
            return [str(path)]
    return ["http://deb.debian.org/debian"]


def build(directory: Path, *, log: bool = True) -> NodeImage:
    if os.geteuid() != 0:
        raise RuntimeError("building the node image needs root (mmdebstrap --mode=root, chroot)")
    apt_install(["mmdebstrap", "qemu-utils", "e2fsprogs"])
    started = time.monotonic()
    work = directory.with_name(directory.name + ".work")
    _remove_tree(work)
    work.mkdir(parents=True)
    rootfs = work / "rootfs"
    try:
        argv = [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--format=directory",
            "--include=" + ",".join(PACKAGES),
            *(f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES),
            "--aptopt=APT::Install-Recommends false",
            SUITE,
            str(rootfs),
            *_mirror(),
        ]
        _say(log, f"mmdebstrap {SUITE} with {len(PACKAGES)} packages (about a minute)")
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed: {proc.stderr.strip()[-2000:]}")
        t_debootstrap = time.monotonic() - started
        _customize(rootfs)
        kernel = _boot_files(rootfs, work)
        tree_mib = _du_mib(rootfs)
        versions = _package_versions(rootfs)
        raw = work / "root.raw"
        _run(
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-L",
            "corral-root",
            "-d",
            str(rootfs),
            str(raw),
            IMAGE_SIZE,
        )
        _run("qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "root.qcow2"))
        raw.unlink()
        _remove_tree(rootfs)
        manifest = {
            "key": directory.name,
            "recipe": recipe(),
            "kernel_version": kernel,
            "built_at": time.time(),
            "build_seconds": round(time.monotonic() - started, 1),
            "mmdebstrap_seconds": round(t_debootstrap, 1),
            "rootfs_mib": tree_mib,
            "qcow2_mib": round((work / "root.qcow2").stat().st_size / 2**20, 1),
            "boot_files_mib": round(
                sum((work / f).stat().st_size for f in ("vmlinuz", "initrd.img")) / 2**20, 1
            ),
            "packages": versions,
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        work.rename(directory)
    except BaseException:
        _remove_tree(work)
        raise
    _say(log, f"built {directory} in {manifest['build_seconds']} s")
    for old in directory.parent.iterdir():
        if old.is_dir() and old != directory and not old.name.endswith(".work"):
            _remove_tree(old)  # images of earlier recipes
    return _image(directory)


def _remove_tree(path: Path) -> None:
    """rm -rf of a build directory, never through a mount: mmdebstrap mounts /proc,
    /sys and /dev inside the root filesystem while it runs, and a build killed
    then leaves them there. Unmount what is under `path` first; refuse if any
    mount stays."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    for _ in range(3):
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(prefix)
        ]
        if not mounts:
            shutil.rmtree(path, ignore_errors=True)
            return
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
    raise RuntimeError(f"{path}: mounts remain under it; not removing it")


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()[-1000:]}")
    return proc.stdout


def _du_mib(path: Path) -> int:
    return int(_run("du", "-sm", "--one-file-system", str(path)).split()[0])


def _customize(rootfs: Path) -> None:
    (rootfs / "usr/local/sbin").mkdir(parents=True, exist_ok=True)
    setup = rootfs / "usr/local/sbin/corral-node-setup"
    shutil.copyfile(GUEST_SETUP, setup)
    setup.chmod(0o755)
    unit = rootfs / "etc/systemd/system/corral-node-setup.service"
    unit.write_text(SETUP_UNIT)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "corral-node-setup.service").symlink_to(
        "/etc/systemd/system/corral-node-setup.service"
    )
    for name in MASKED:
        link = rootfs / "etc/systemd/system" / name
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (rootfs / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/ssh/sshd_config.d/corral-fixture.conf").write_text(SSHD_CONF)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # each node VM makes its own on first boot
    (rootfs / "etc/fstab").write_text("LABEL=corral-root / ext4 defaults,noatime 0 1\n")
    (rootfs / "etc/hostname").write_text("corral-node\n")
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "etc/initramfs-tools/conf.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/initramfs-tools/conf.d/corral-node.conf").write_text("MODULES=list\n")
    (rootfs / "etc/initramfs-tools/modules").write_text(
        "virtio_pci\nvirtio_blk\nvirtio_net\next4\n"
    )
    # LVM must not scan the DRBD devices stacked on its own volumes.
    (rootfs / "etc/lvm/lvmlocal.conf").write_text(
        'devices {\n  global_filter = [ "r|^/dev/drbd.*|" ]\n}\n'
    )
    for modules in (rootfs / "lib/modules").iterdir():
        for sub in PRUNED_MODULES:
            shutil.rmtree(modules / "kernel" / sub, ignore_errors=True)
        _run("chroot", str(rootfs), "depmod", "-a", modules.name)
    _run("chroot", str(rootfs), "update-initramfs", "-u", "-k", "all")
    for junk in ("var/cache/apt", "var/lib/apt/lists"):
        for child in (rootfs / junk).glob("*"):
            if child.is_file():
                child.unlink()


def _boot_files(rootfs: Path, work: Path) -> str:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise RuntimeError("the root filesystem has no kernel in /boot")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    shutil.copyfile(kernels[-1], work / "vmlinuz")
    shutil.copyfile(rootfs / "boot" / f"initrd.img-{version}", work / "initrd.img")
    return version


def _package_versions(rootfs: Path) -> dict[str, str]:
    """Versions of the packages named in the recipe, from the image's dpkg status."""
    versions: dict[str, str] = {}
    for stanza in (rootfs / "var/lib/dpkg/status").read_text().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        name = fields.get("Package", "")
        if name in PACKAGES or name.startswith("linux-image-6"):
            versions[name] = fields.get("Version", "")
    return versions


def main() -> int:
    started = time.monotonic()
    hit = cached()
    image = ensure()
    took = time.monotonic() - started
    print(
        json.dumps(
            {
                "image": str(image.directory),
                "cached": hit is not None,
                "seconds": round(took, 1),
                "build_seconds": image.manifest.get("build_seconds"),
                "qcow2_mib": image.manifest.get("qcow2_mib"),
                "rootfs_mib": image.manifest.get("rootfs_mib"),
                "kernel": image.manifest.get("kernel_version"),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
