"""The orchestrator's side of the node helper: every step's requests are lines
that run the helper and nothing else as root, carry the leader's term exactly when
they change the node (and cannot be built without one), and validate in the
helper itself (the two sides agree on every verb and field)."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace

import pytest

from events.ids import InstanceName, NodeName
from events.specs import CloudInitSpec, DiskSpec, ImageSpec, InstanceSpec, NicSpec
from nodehelper.main import parse_batch, parse_request
from reactors.nodes.commands import (
    HELPER,
    HelperRequest,
    NoTerm,
    batch_line,
    helper_line,
    step_requests,
    vm_kill,
)
from reactors.nodes.probe import probe_line
from reactors.plans.steps import DiskConfig, DrbdPeerConfig, Step, StepKind

DISK = DiskConfig(
    resource="web-d0",
    index=0,
    size_mib=1024,
    minor=3,
    port=11003,
    volume_group="corral",
    hosts=(
        DrbdPeerConfig(node=NodeName("node1"), address="10.0.0.1", node_id=0),
        DrbdPeerConfig(node=NodeName("node2"), address="fd00::2", node_id=1),
    ),
)
SPEC = InstanceSpec(
    name=InstanceName("web"), memory_mib=512, vcpus=2, disks=(DiskSpec(size_mib=1024),)
)


def steps() -> list[Step]:
    common = {"node": NodeName("node1"), "instance": InstanceName("web")}
    out = [
        Step(kind=k, disk=DISK, renamed_from="old-d0", **common)  # type: ignore[arg-type]
        for k in StepKind
        if k
        not in (
            StepKind.START_VM,
            StepKind.START_VM_INCOMING,
            StepKind.STOP_VM,
            StepKind.HOTPLUG_NIC,
            StepKind.HOTPLUG_DISK,
            StepKind.INSTALL_OS,
            StepKind.RENAME_OS,
        )
        and k != StepKind.MIGRATE_VM
    ]
    out.append(Step(kind=StepKind.START_VM, spec=SPEC, disks=(DISK,), **common))  # type: ignore[arg-type]
    with_os = replace(
        SPEC,
        os="deb",
        image=ImageSpec(name="deb", source="https://img.example.org/d.raw", sha256="0f" * 32),
        cloud_init=CloudInitSpec(user_data="#cloud-config\n"),
    )
    out.append(Step(kind=StepKind.INSTALL_OS, spec=with_os, disk=DISK, **common))  # type: ignore[arg-type]
    out.append(
        Step(kind=StepKind.START_VM, spec=with_os, disks=(DISK,), seed_id="web-1", **common)  # type: ignore[arg-type]
    )
    nic = NicSpec(mac="aa:00:00:00:00:01", link="br0")
    with_def = replace(
        SPEC,
        os="debootstrap+default",
        image=ImageSpec(name="debootstrap+default", kind="ganeti-os", parameters=(("dhcp", "no"),)),
        nics=(replace(nic, ip="192.0.2.5"),),
    )
    out.append(
        Step(
            kind=StepKind.INSTALL_OS,
            spec=with_def,
            disk=DISK,
            disks=(DISK,),
            reinstall=True,
            **common,  # type: ignore[arg-type]
        )
    )
    out.append(
        Step(kind=StepKind.RENAME_OS, spec=with_def, disks=(DISK,), renamed_from="old", **common)  # type: ignore[arg-type]
    )
    out.append(Step(kind=StepKind.HOTPLUG_DISK, spec=SPEC, disk=DISK, **common))  # type: ignore[arg-type]
    out.append(
        Step(kind=StepKind.HOTPLUG_NIC, spec=replace(SPEC, nics=(nic,)), nic_index=0, **common)  # type: ignore[arg-type]
    )
    out.append(
        Step(
            kind=StepKind.START_VM_INCOMING,
            spec=SPEC,
            disks=(DISK,),
            migrate_address="10.0.0.1",
            migrate_port=12001,
            **common,  # type: ignore[arg-type]
        )
    )
    return out


@pytest.mark.parametrize("step", steps(), ids=lambda s: s.kind.value)
def test_each_steps_requests_run_only_the_helper_and_validate_in_it(step: Step) -> None:
    for request in step_requests(step):
        line = helper_line(request, term=7)
        argv = shlex.split(line.line)
        assert argv[:3] == ["sudo", "-n", HELPER]
        assert ("--term" in argv) == request.mutating and argv[argv.index("--term") + 1] == "7"
        parsed = parse_request(argv[3:], line.stdin)  # raises Refused if the helper disagrees
        assert parsed.verb == request.verb and parsed.term == 7


def test_requests_that_change_a_node_need_a_term() -> None:
    with pytest.raises(NoTerm, match="no leader term"):
        helper_line(vm_kill("web"), term=None)
    with pytest.raises(NoTerm):
        batch_line([("s", step_requests(steps()[0]))], term=None)
    probe = probe_line()
    assert shlex.split(probe.line) == ["sudo", "-n", HELPER, "probe"]


def test_a_batch_line_is_one_helper_call_the_helper_accepts_whole() -> None:
    groups = [(f"step{i}", step_requests(step)) for i, step in enumerate(steps())]
    line = batch_line(groups, term=9)
    assert shlex.split(line.line) == ["sudo", "-n", HELPER, "batch", "--term", "9"]
    items = parse_batch(line.stdin)
    assert len(items) == sum(len(r) for _, r in groups)
    docs = [json.loads(x) for x in line.stdin.decode().splitlines()]
    assert [d["group"] for d in docs][:4] == ["step0"] * 4
    assert all("--term" not in d["argv"] for d in docs)


def test_names_are_checked_before_a_request_is_built() -> None:
    with pytest.raises(ValueError, match="instance name"):
        vm_kill("web;reboot")
    bad = HelperRequest(verb="lv-create", args=("corral", "x;id", "64"))
    argv = shlex.split(helper_line(bad, term=1).line)
    assert argv[-2] == "x;id"  # quoted: one argument, which the helper then refuses
