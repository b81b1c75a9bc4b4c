"""The prerequisite judgement of `corral node add/check` on gathered node output
(texts as the node VMs printed them): each problem one FAILED line with its fix,
and the install script only for what it can fix, with its inputs validated."""

from __future__ import annotations

import pytest

from nodehelper.bundle import bundle
from reactors.nodes.checks import (
    HELPER_PATH,
    MARK,
    SECTIONS,
    SUDOERS_RULE,
    Requirements,
    check_line,
    gather_script,
    install_script,
    judge,
    parse_gathered,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgYtvqwq76TvUOr9bNpS61bE4D9HiMRTphA+vhcVOG6 corral"
GOOD = {
    "hostname": "node1",
    "kernel": "6.1.0-57-amd64",
    "os": "debian 12",
    "modprobe-drbd": "rc=0",
    "proc-drbd": "version: 8.4.11 (api:1/proto:86-101)",
    "modprobe-kvm": "rc=0",
    "dev-kvm": "present",
    "dpkg": "\n".join(
        f"{p} ii " for p in ("drbd-utils", "lvm2", "qemu-system-x86", "python3", "sudo", "iproute2")
    ),
    "vgs": '{"report": [{"vg": [{"vg_name": "corral", "vg_size": "2044.00",'
    ' "vg_free": "2044.00"}]}]}',
    "bridges": "",
    "addresses": "127.0.0.1/8\n10.0.2.15/24\n10.231.1.1/24",
    "time": "1000.0",
    "ntp": "unknown",
    "meminfo": "MemTotal:         466000 kB\nMemAvailable:     370000 kB",
    "nproc": "1",
    "corral": "998\n" + KEY,
    "sudoers": "valid",
    "helper": "root 755\ncorral-node-helper 1",
    "modules-load": "drbd",
    "python3": "3.11.2",
}
REQ = Requirements(replication_address="10.231.1.1", corral_key=KEY, disk_mib=1024)


def report(**changes: str):  # type: ignore[no-untyped-def]
    return judge({**GOOD, **changes}, REQ, local_time=1000.0, rtt_s=0.05)


def failed(rep) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c.name: check_line(c) for c in rep.checks if not c.ok}


def test_a_good_node_passes_every_check() -> None:
    rep = report()
    assert rep.ok, failed(rep)
    assert (rep.drbd_version, rep.memory_mib, rep.vg_free_mib, rep.cpus) == ("8.4.11", 455, 2044, 1)


def test_each_problem_is_one_failed_line_with_its_fix() -> None:
    rep = report(
        dpkg=GOOD["dpkg"].replace("drbd-utils ii", "drbd-utils rc"),
        **{
            "modprobe-drbd": "modprobe: ERROR: could not insert 'drbd': Invalid argument\nrc=1",
            "proc-drbd": "",
            "vgs": '{"report": [{"vg": []}]}',
            "dev-kvm": "absent",
            "time": "1009.0",
            "corral": "",
            "sudoers": "absent",
            "helper": "",
        },
    )
    lines = failed(rep)
    assert set(lines) == {
        "package drbd-utils", "drbd module", "drbd version", "kvm", "volume group", "clock",
        "corral account", "sudoers rule", "node helper",
    }  # fmt: skip
    assert "fix: apt-get install drbd-utils" in lines["package drbd-utils"]
    assert (
        "could not insert 'drbd'" in lines["drbd module"]
        and "/etc/modprobe.d" in lines["drbd module"]
    )
    assert "fix: pvcreate /dev/DISK && vgcreate corral /dev/DISK" in lines["volume group"]
    assert "+9.00 s" in lines["clock"]


def test_declared_sizes_bridges_and_addresses_are_checked() -> None:
    req = Requirements(
        memory_mib=1024, disk_mib=4096, bridges=("br0",), replication_address="10.231.1.9"
    )
    rep = judge(GOOD, req, local_time=1000.0, rtt_s=0.0)
    assert set(failed(rep)) == {"memory", "volume group", "bridge br0", "replication address"}


def test_dry_run_of_the_install_script_fixes_only_what_it_can() -> None:
    rep = report(dpkg=GOOD["dpkg"].replace("drbd-utils ii", "drbd-utils un"), corral="")
    helper = bundle()
    script = install_script(rep, REQ, helper=helper)
    assert "apt-get install -y -q --no-install-recommends drbd-utils" in script
    assert "lvm2" not in script.split("apt-get install")[1].splitlines()[0]
    assert "useradd --system" in script and "visudo -c" in script
    assert "vgcreate" not in script  # a person picks the disk
    # The helper goes in whole, and the one sudoers rule allows only it.
    assert helper.rstrip("\n") in script
    assert f"'{SUDOERS_RULE}'" in script and SUDOERS_RULE.endswith(f"NOPASSWD: {HELPER_PATH}")
    with pytest.raises(ValueError, match="volume group"):
        install_script(rep, Requirements(volume_group="x; rm -rf /"), helper=helper)
    with pytest.raises(ValueError, match="OpenSSH public key"):
        install_script(rep, Requirements(corral_key="ssh-ed25519 AAAA'; reboot #"), helper=helper)
    with pytest.raises(ValueError, match="not a built node helper"):
        install_script(rep, REQ, helper="#!/bin/sh\nid\n")


def test_gathered_output_round_trip() -> None:
    script = gather_script()
    assert all(f"echo {MARK}{s}" in script for s in SECTIONS)
    text = "".join(f"{MARK}{s}\n{GOOD[s]}\n" for s in SECTIONS)
    assert parse_gathered(text)["vgs"].strip() == GOOD["vgs"]
    with pytest.raises(ValueError, match="lacks sections"):
        parse_gathered("bash: sh: not found\n")


def test_bridges_parse_iproute2_61_empty_objects_for_filtered_links() -> None:
    # Captured on a Debian bookworm node VM without bridges (iproute2 6.1).
    from reactors.nodes.probe import parse_bridges

    assert parse_bridges("[{},{},{}]\n") == ()
    assert parse_bridges('[{},{"ifindex":4,"ifname":"br0"},{}]\n') == ("br0",)
