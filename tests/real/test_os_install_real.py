"""OS provisioning with the real tools: the node helper's `image-write` checks a
qcow2 catalogue image with sha256sum and writes it raw onto the instance's device
with qemu-img (a wrong checksum first: refused, the device untouched); its
`seed-write` builds the cloud-init seed (FAT, label cidata, 0600 in a 0700
directory) from the texts the orchestrator generates; `vm-start` with
`"seed": true` attaches it; the tiny guest (tests.support.nodes.guest, TCG) reads its
hostname and address from the seed, shows the first bytes of the disk corral
wrote, and answers ping and HTTP on the bridge. The requests are the
orchestrator's own (reactors.nodes.commands); only the paths differ from
production (tests.support.nodes.mapped_env.NetnsEnv). Root only."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from events.ids import InstanceName
from events.specs import CloudInitSpec, DiskSpec, ImageSpec, InstanceSpec, NicSpec
from nodehelper.images import image_write
from nodehelper.seed import seed_write
from nodehelper.vm import launch, start_request
from reactors.nodes.commands import seed_write as seed_request
from reactors.nodes.commands import vm_start
from reactors.plans.steps import DiskConfig
from tests.real.test_guest_network_real import (  # noqa: F401  (nodes: a fixture)
    GUEST_IP,
    MAC,
    Serial,
    http,
    nodes,
    ping,
    sh,
)
from tests.support.nodes.guest import guest_kit
from tests.support.nodes.mapped_env import NetnsEnv
from tests.support.tools import require_tool

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

MARKER = b"corral-os tiny-1 written by image-write\n"


def test_guest_boots_with_the_image_and_the_seed_corral_wrote(
    tmp_path: Path,
    nodes: tuple[str, str],  # noqa: F811  (the fixture imported above)
) -> None:
    a, _ = nodes
    qemu_img = require_tool("qemu-img", "qemu-utils")
    kit = guest_kit()
    images, run = tmp_path / "images", tmp_path / "run-a"
    images.mkdir()
    run.mkdir()
    (tmp_path / "src.raw").write_bytes(MARKER + b"\0" * (1024 * 1024 - len(MARKER)))
    subprocess.run(
        [qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "src.raw"),
         str(images / "tiny.qcow2")],
        check=True,
        timeout=60,
    )  # fmt: skip
    sha = hashlib.sha256((images / "tiny.qcow2").read_bytes()).hexdigest()
    disk = tmp_path / "d0.raw"
    disk.write_bytes(b"\0" * 8 * 1024 * 1024)
    env = NetnsEnv(
        ns=a,
        paths={
            "/run/corral": str(run),
            "/var/lib/corral/kernels": str(kit.kernel.parent),
            "/var/lib/corral/images": str(images),
            "/var/lib/corral/seed": str(tmp_path / "seed"),
            "/dev/drbd3": str(disk),
        },
    )

    # Another checksum: refused, nothing written.
    refused = image_write(["tiny.qcow2", "0" * 64, "qcow2", "3"], [], b"")(env)
    assert refused.rc == 65 and b"nothing was written" in refused.stderr, refused
    assert disk.read_bytes()[: len(MARKER)] == b"\0" * len(MARKER)
    started = time.monotonic()
    written = image_write(["tiny.qcow2", sha, "qcow2", "3"], [], b"")(env)
    assert written.rc == 0, written.stderr
    write_s = time.monotonic() - started
    assert disk.read_bytes()[: len(MARKER)] == MARKER  # qcow2 -> raw on the device

    spec = InstanceSpec(
        name=InstanceName("web"),
        memory_mib=128,
        vcpus=1,
        disks=(DiskSpec(size_mib=8),),
        os="tiny",
        nics=(NicSpec(mac=MAC, link="br0", ip=GUEST_IP),),
        image=ImageSpec(name="tiny", source="/var/lib/corral/images/tiny.qcow2", sha256=sha),
        cloud_init=CloudInitSpec(),
    )
    request = seed_request(spec, instance_id="web-1")
    seeded = seed_write([], [], json.dumps(request.body).encode())(env)
    assert seeded.rc == 0, seeded.stderr
    seed = tmp_path / "seed" / "web.img"
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    assert stat.S_IMODE(seed.parent.stat().st_mode) == 0o700

    cfg = DiskConfig(
        resource="web-d0", index=0, size_mib=8, minor=3, port=11003, volume_group="corral", hosts=()
    )
    body = vm_start(
        spec=spec,
        disks=(cfg,),
        nics=[{"index": 0, "mac": MAC, "link": "br0", "mode": "bridged"}],
        seed=True,
        hv={
            "kvm_flag": "disabled",
            "kernel_path": "/var/lib/corral/kernels/vmlinuz",
            "initrd_path": "/var/lib/corral/kernels/initrd.gz",
            "kernel_args": "console=ttyS0 quiet panic=-1",
        },
    ).body
    assert body is not None
    started = time.monotonic()
    done = launch(env, start_request(dict(body)))
    assert done.rc == 0, done.stderr
    serial = Serial(run / "web.serial")
    said = serial.wait_for(r"(corral-seed [^\r\n]*)\r?\n", 90)
    assert said == f"corral-seed hostname=web address={GUEST_IP}/24", serial.text[-2000:]
    assert serial.wait_for(r"corral-os-disk ([^\r\n]*)\r?\n", 10) == MARKER.decode().strip()
    serial.wait_for(r"corral-guest-ready", 30)
    boot_s = time.monotonic() - started
    sent, got = ping(kit, a, 3)
    assert got >= 1, (sent, got)
    assert http(kit, a).strip() == "hello from web"
    print(
        f"\nimage-write {write_s:.2f}s (qcow2 -> raw, 1 MiB); guest up from the seed in "
        f"{boot_s:.1f}s (TCG); ping {got}/{sent}; seed {seed.stat().st_size} bytes; "
        f"vfat label: {sh('blkid', '-o', 'value', '-s', 'LABEL', str(seed)).strip()}"
    )
