"""The catalog of node commands: pure builders of the node helper's requests (a
planned Step to the requests that carry it out) and the exact `sudo -n
corral-node-helper ...` lines that run them, one at a time or as one batch, every
name validated and quoted, and the batch's answer read back. Reading a node (the
probe and the real tools' outputs) is `reactors.nodes.probe`.

Pure: no I/O, no logging. The helper's verbs are `nodehelper`'s; the orchestrator
sends nothing else as root.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from events.fields.hv import NIC_TYPES
from events.fields.images import image_file
from events.ids import check_name
from events.specs import InstanceSpec
from reactors import naming
from reactors.nodes.cloud_init import seed_texts
from reactors.plans.steps import DiskConfig, Step, StepKind


class ParseError(ValueError):
    def __init__(self, command: str, detail: str) -> None:
        super().__init__(f"{command}: {detail}")
        self.command = command


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandLine:
    """One exec request: a shell-safe command line and what goes to its stdin."""

    line: str
    stdin: bytes = b""
    summary: str = ""
    ok_if_stderr: str = ""  # a non-zero exit whose stderr matches this regex is fine
    label: str = ""  # the helper verb, for metrics (never the command's text)


def q(*argv: str) -> str:
    return " ".join(shlex.quote(a) for a in argv)


# ----------------------------------------------------------------------- helper

HELPER = "/usr/local/lib/corral/corral-node-helper"
READ_ONLY_VERBS = frozenset({"probe", "term", "version"})
EXIT_STALE_TERM = 75  # the helper refused an older term than the node has seen
EXIT_REFUSED = 64  # the helper refused an invalid request (nodehelper.fields.EXIT_REFUSED)


class NoTerm(ValueError):
    """A command that changes a node was about to go out without a leader's term."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HelperRequest:
    """One verb of the node helper: its arguments (options included, in order),
    the JSON request it reads on stdin, and a summary for logs and step records."""

    verb: str
    args: tuple[str, ...] = ()
    body: Mapping[str, Any] | None = None
    summary: str = ""
    ok_if_stderr: str = ""  # a non-zero exit whose stderr matches this regex is fine
    # How much longer than a command's usual allowance it may take (an OS
    # definition's script: the node helper's own limit, nodehelper.osdef).
    extra_timeout_s: float = 0.0

    @property
    def mutating(self) -> bool:
        return self.verb not in READ_ONLY_VERBS

    def argv(self, *, term: int | None) -> list[str]:
        argv = [self.verb]
        if self.mutating:
            if term is None:
                raise NoTerm(f"{self.summary or self.verb}: no leader term to send it under")
            argv += ["--term", str(int(term))]
        return argv + list(self.args)


def helper_line(request: HelperRequest, *, term: int | None) -> CommandLine:
    body = b"" if request.body is None else json.dumps(request.body, sort_keys=True).encode()
    return CommandLine(
        line="sudo -n " + q(HELPER, *request.argv(term=term)),
        stdin=body,
        summary=request.summary or request.verb,
        ok_if_stderr=request.ok_if_stderr,
        label=request.verb,
    )


def batch_line(
    groups: Sequence[tuple[str, Sequence[HelperRequest]]], *, term: int | None
) -> CommandLine:
    """One `batch`: each group's requests in order, all under one term; within a
    group, a failure (other than one its ok_if_stderr allows) skips the rest of
    that group, and other groups go on."""
    lines = []
    for group, requests in groups:
        for r in requests:
            doc: dict[str, Any] = {"argv": [r.verb, *r.args], "group": group}
            if r.body is not None:
                doc["stdin"] = json.dumps(r.body, sort_keys=True)
            if r.ok_if_stderr:
                doc["ok_if_stderr"] = r.ok_if_stderr
            lines.append(json.dumps(doc, sort_keys=True) + "\n")
    if term is None:
        raise NoTerm(f"a batch of {len(lines)} requests: no leader term to send it under")
    return CommandLine(
        line="sudo -n " + q(HELPER, "batch", "--term", str(int(term))),
        stdin="".join(lines).encode(),
        summary="; ".join(r.summary for _, requests in groups for r in requests),
        label="batch",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    rc: int | None  # None: skipped after an earlier failure of its group
    stdout: str
    stderr: str


def parse_batch(text: str, *, count: int) -> list[BatchResult]:
    results = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            doc = json.loads(line)
            rc = doc["rc"]
            results.append(
                BatchResult(
                    rc=None if rc is None else int(rc),
                    stdout=str(doc["stdout"]),
                    stderr=str(doc["stderr"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ParseError("batch", f"result {n} is not a result line: {line[:80]!r}") from exc
    if len(results) != count:
        raise ParseError("batch", f"{len(results)} results for {count} requests")
    return results


# ----------------------------------------------------------------------- requests


def drbd_config(disk: DiskConfig, *, two: bool = False, drbd_major: int = 9) -> HelperRequest:
    """The helper writes /etc/drbd.d/RESOURCE.res itself from these fields, for the
    node's DRBD module: DRBD 9 gets each host's node-id (its metadata remembers
    it); 8.4's drbdadm refuses the keyword."""
    check_name(disk.resource, what="DRBD resource name")
    hosts = []
    for host in disk.hosts:
        check_name(host.node, what="node name")
        if not re.fullmatch(r"[0-9a-fA-F:.]+", host.address):
            raise ValueError(f"replication address {host.address!r} is not an IP address")
        hosts.append({"node": host.node, "node_id": host.node_id, "address": host.address})
    return HelperRequest(
        verb="drbd-config",
        body={
            "resource": disk.resource,
            "minor": disk.minor,
            "port": disk.port,
            "volume_group": disk.volume_group,
            "allow_two_primaries": two,
            "hosts": hosts,
            "drbd_major": 9 if drbd_major >= 9 else 8,
        },
        summary=f"write /etc/drbd.d/{disk.resource}.res",
    )


def drbdadm(sub: str, resource: str, *options: str, ok_if_stderr: str = "") -> HelperRequest:
    return HelperRequest(
        verb="drbdadm",
        args=(sub, *options, check_name(resource, what="DRBD resource name")),
        summary=" ".join(("drbdadm", sub, *options, resource)),
        ok_if_stderr=ok_if_stderr,
    )


def vm_start(
    *,
    spec: InstanceSpec,
    disks: tuple[DiskConfig, ...],
    incoming: tuple[str, int] | None = None,
    nics: Sequence[Mapping[str, Any]] = (),
    vnc_display: int | None = None,
    seed: bool = False,
    hv: Mapping[str, str] | None = None,
) -> HelperRequest:
    """The helper builds qemu's argv itself from this request (its fields are
    nodehelper.vm's: `nics` entries {index, mac, link, mode, model}, the VNC
    display on the node's loopback, the cloud-init seed drive at the helper's own
    path for this instance, Ganeti-style hypervisor parameters)."""
    body: dict[str, Any] = {
        "name": check_name(spec.name, what="instance name"),
        "memory_mib": int(spec.memory_mib),
        "vcpus": int(spec.vcpus),
        "disks": [{"index": d.index, "minor": int(d.minor)} for d in disks],
    }
    if incoming is not None:
        body["incoming"] = {"address": incoming[0], "port": int(incoming[1])}
    if nics:
        body["nics"] = [dict(n) for n in nics]
    if vnc_display is not None:
        body["vnc"] = {"display": int(vnc_display)}
    if seed:
        body["seed"] = True
    if hv:
        body["hv"] = dict(hv)
    return HelperRequest(verb="vm-start", body=body, summary=f"qemu start {spec.name}")


def seed_write(spec: InstanceSpec, *, instance_id: str) -> HelperRequest:
    """The instance's cloud-init seed (`reactors.nodes.cloud_init`), written by the
    helper to its own path for the instance, before each start (the node a VM
    starts on after a failover has none yet)."""
    name = check_name(spec.name, what="instance name")
    return HelperRequest(
        verb="seed-write",
        body={"name": name, **seed_texts(spec, instance_id=instance_id)},
        summary=f"write cloud-init seed of {name}",
    )


def seed_remove(resource: str) -> list[HelperRequest]:
    """When `resource` is an instance's first disk, its copy leaving a node takes
    the instance's seed image there with it (a start anywhere writes a new one)."""
    parsed = naming.parse_disk_name(resource)
    if parsed is None or parsed[1] != 0:
        return []
    name = check_name(parsed[0], what="instance name")
    return [
        HelperRequest(verb="seed-remove", args=(name,), summary=f"remove cloud-init seed of {name}")
    ]


def install_requests(spec: InstanceSpec, disk: DiskConfig) -> list[HelperRequest]:
    """An OS install onto the first disk: the image fetched into the node's image
    directory when its source is a URL, then written (the helper checks the
    sha256 before it touches the disk)."""
    image = spec.image
    if image is None:
        raise ValueError(f"instance {spec.name} has no image to install")
    if image.ganeti_os:
        raise ValueError(f"instance {spec.name}'s OS is a definition: os_script_request")
    file = image_file(image.source) or check_name(image.name, what="image name")
    fetch = []
    if image_file(image.source) is None:
        fetch.append(
            HelperRequest(
                verb="image-fetch",
                args=(file, image.sha256, image.source),
                summary=f"fetch image {image.name} from {image.source}",
            )
        )
    write = HelperRequest(
        verb="image-write",
        args=(file, image.sha256, image.format, str(int(disk.minor))),
        summary=f"write image {image.name} onto /dev/drbd{int(disk.minor)} ({disk.resource})",
    )
    return [*fetch, write]


OS_SCRIPT_TIMEOUT_S = 4 * 3600.0  # nodehelper.osdef.SCRIPT_TIMEOUT_S


def os_script_request(
    spec: InstanceSpec,
    disks: Sequence[DiskConfig],
    *,
    script: str,
    reinstall: bool = False,
    old_name: str = "",
) -> HelperRequest:
    """`os-create` or `os-rename` of a Ganeti OS definition: what the node helper
    turns into the OS API's environment (nodehelper.osdef), its disks the
    instance's DRBD devices in order (Primary on this node), its NICs with their
    recorded MACs, its beparams and hvparams as Ganeti names them."""
    image = spec.image
    if image is None or not image.ganeti_os:
        raise ValueError(f"instance {spec.name} has no Ganeti OS definition")
    if script not in ("create", "rename"):
        raise ValueError(f"no {script} script in the OS API corral runs")
    if not disks:
        raise ValueError(f"instance {spec.name} has no disks for its OS")
    name = check_name(spec.name, what="instance name")
    peers = [h.node for h in disks[0].hosts]
    body: dict[str, Any] = {
        "os": image.name,
        "instance": name,
        "primary": str(peers[0]),
        "secondaries": [str(n) for n in peers[1:]],
        "disks": [{"path": f"/dev/drbd{int(d.minor)}", "size_mib": int(d.size_mib)} for d in disks],
        "nics": [
            {"mac": n.mac or "", "ip": n.ip or "", "mode": n.mode, "link": n.link}
            for n in spec.nics
        ],
        "be": {
            "maxmem": str(spec.memory_mib),
            "minmem": str(spec.memory_mib),
            "vcpus": str(spec.vcpus),
        },
        "hv": spec.hv.given(),
        "params": dict(image.parameters),
        "reinstall": reinstall,
    }
    if script == "rename":
        body["old_name"] = check_name(old_name, what="old instance name")
    what = f"{image.name} {script} for {name}" + (f" (was {old_name})" if old_name else "")
    return HelperRequest(
        verb=f"os-{script}",
        body=body,
        summary=f"run OS definition {what}",
        extra_timeout_s=OS_SCRIPT_TIMEOUT_S + 60.0,
    )


# qemu's device for each of Ganeti's kvm `nic_type`s ("": paravirtual, virtio-net).
NIC_MODELS = {
    "": "virtio-net-pci",
    "paravirtual": "virtio-net-pci",
    **{t: t for t in NIC_TYPES if t != "paravirtual"},
}


def nic_requests(spec: InstanceSpec) -> list[dict[str, Any]]:
    """The vm-start `nics` of an instance: its MACs as recorded (never made up
    here: a NIC without one was declared before MACs were assigned), each NIC the
    device of the filled `nic_type` (pass `spec` with its filled hvparams)."""
    model = NIC_MODELS[spec.hv.nic_type]
    nics = []
    for i, nic in enumerate(spec.nics):
        if not nic.mac:
            raise ValueError(f"instance {spec.name}: nics[{i}].mac is not recorded")
        nics.append(
            {"index": i, "mac": nic.mac, "link": nic.link, "mode": nic.mode, "model": model}
        )
    return nics


def nic_hotplug(spec: InstanceSpec, index: int) -> HelperRequest:
    """`vm-hotplug` adding NIC `index` of `spec` to its running VM, laid out as a
    cold start would lay it out (the helper undoes its own steps when qemu refuses)."""
    nics = nic_requests(spec)
    if not 0 <= index < len(nics):
        raise ValueError(f"instance {spec.name} has no nics[{index}]")
    return HelperRequest(
        verb="vm-hotplug",
        body={
            "name": check_name(spec.name, what="instance name"),
            "action": "add",
            "nic": nics[index],
        },
        summary=f"hotplug {spec.name} nics[{index}] ({nics[index]['mac']}, {nics[index]['link']})",
    )


def disk_hotplug(spec: InstanceSpec, disk: DiskConfig) -> HelperRequest:
    """`vm-hotplug` adding DRBD disk `disk` to the running VM with the instance's
    cache and aio (`spec.hv`, filled), as a cold start would attach it."""
    return HelperRequest(
        verb="vm-hotplug",
        body={
            "name": check_name(spec.name, what="instance name"),
            "action": "add",
            "disk": {"index": int(disk.index), "minor": int(disk.minor)},
            "hv": {k: v for k, v in spec.hv.given().items() if k in ("disk_cache", "disk_aio")},
        },
        summary=f"hotplug {spec.name} disk {disk.index} (/dev/drbd{disk.minor})",
    )


def vnc_display(disks: Sequence[DiskConfig]) -> int | None:
    """The VNC display `reactors.naming.vnc_display` gives these disks."""
    return naming.vnc_display(int(disks[0].minor)) if disks else None


def vm_kill(instance: str) -> HelperRequest:
    name = check_name(instance, what="instance name")
    return HelperRequest(verb="vm-kill", args=(name,), summary=f"kill -9 {name}")


def lv_extend(disk: DiskConfig) -> HelperRequest:
    return HelperRequest(
        verb="lv-extend",
        args=(disk.volume_group, disk.resource, str(int(disk.size_mib))),
        summary=f"lvextend {disk.resource} to {disk.size_mib}M",
    )


def lv_rename(disk: DiskConfig, *, old: str) -> HelperRequest:
    """`lvrename VG OLD NEW`; an OLD already gone (a rename resumed after the
    lvrename ran) is fine: the resource's `adjust` then finds NEW or fails."""
    if not old:
        raise ValueError("rename-disk needs the LV's old name")
    vg = disk.volume_group
    return HelperRequest(
        verb="lv-rename",
        args=(vg, check_name(old, what="LV name"), disk.resource),
        summary=f"lvrename {vg}/{old} {disk.resource}",
        ok_if_stderr=f'Existing logical volume "{re.escape(old)}" not found',
    )


def _drbd_down(res: str) -> list[HelperRequest]:
    return [
        drbdadm("down", res, ok_if_stderr="not defined|No such resource"),
        HelperRequest(verb="drbd-remove-config", args=(res,), summary=f"rm /etc/drbd.d/{res}.res"),
    ]


def _os_requests(step: Step) -> list[HelperRequest]:
    """INSTALL_OS (an image written, or a definition's create script) and
    RENAME_OS (a definition's rename script)."""
    spec, disk = step.spec, step.disk
    if spec is None:
        raise ValueError(f"{step.kind.value} has no instance spec")
    if step.kind == StepKind.RENAME_OS:
        return [os_script_request(spec, step.disks, script="rename", old_name=step.renamed_from)]
    if disk is None:
        raise ValueError(f"{step.kind.value} has no disk")
    if spec.image is not None and spec.image.ganeti_os:
        disks = step.disks or (disk,)
        return [os_script_request(spec, disks, script="create", reinstall=step.reinstall)]
    return install_requests(spec, disk)


def step_requests(step: Step, *, drbd_major: int = 9) -> list[HelperRequest]:
    """The helper requests for one step on `step.node`, whose DRBD module is
    `drbd_major` (8 or 9), in order (GROW_DISK's peer half and the QMP-driven steps
    are handled by `reactors.nodes.ssh_ops`)."""
    disk = step.disk
    k = step.kind
    if k in (StepKind.START_VM, StepKind.START_VM_INCOMING) and step.spec is not None:
        incoming = (
            (step.migrate_address, step.migrate_port) if k == StepKind.START_VM_INCOMING else None
        )
        seed = [seed_write(step.spec, instance_id=step.seed_id)] if step.seed_id else []
        return [
            *seed,
            vm_start(
                spec=step.spec,
                disks=step.disks,
                incoming=incoming,
                nics=nic_requests(step.spec),
                vnc_display=vnc_display(step.disks),
                hv=step.spec.hv.given(),
                seed=bool(seed),
            ),
        ]
    if k == StepKind.HOTPLUG_NIC and step.spec is not None:
        return [nic_hotplug(step.spec, step.nic_index)]
    if k == StepKind.HOTPLUG_DISK and step.spec is not None and disk is not None:
        return [disk_hotplug(step.spec, disk)]
    if k in (StepKind.INSTALL_OS, StepKind.RENAME_OS):
        return _os_requests(step)
    if disk is None:
        raise ValueError(f"{k.value} has no helper requests")
    res = disk.resource
    if k == StepKind.CREATE_DISK:
        return [
            HelperRequest(
                verb="lv-create",
                args=(disk.volume_group, res, str(int(disk.size_mib))),
                summary=f"lvcreate {disk.volume_group}/{res} {disk.size_mib}M",
            ),
            drbd_config(disk, drbd_major=drbd_major),
            drbdadm("create-md", res, "--force"),
            drbdadm("up", res),
        ]
    if k in (StepKind.DRBD_UP, StepKind.DRBD_DUAL_PRIMARY, StepKind.DRBD_SINGLE_PRIMARY):
        two = k == StepKind.DRBD_DUAL_PRIMARY
        return [drbd_config(disk, two=two, drbd_major=drbd_major), drbdadm("adjust", res)]
    if k == StepKind.DRBD_DISCARD:
        return [
            drbd_config(disk, drbd_major=drbd_major),
            drbdadm("adjust", res),
            drbdadm("disconnect", res),
            drbdadm("connect", res, "--discard-my-data"),
        ]
    single = {
        StepKind.DRBD_INITIAL_PRIMARY: ("primary", "--force"),
        StepKind.DRBD_PRIMARY: ("primary",),
        StepKind.DRBD_SECONDARY: ("secondary",),
    }
    if k in single:
        sub, *options = single[k]
        return [drbdadm(sub, res, *options)]
    if k == StepKind.GROW_DISK:
        return [lv_extend(disk)]
    if k == StepKind.DRBD_DOWN:
        return _drbd_down(res)
    if k == StepKind.RENAME_DISK:
        return [
            lv_rename(disk, old=step.renamed_from),
            drbd_config(disk, drbd_major=drbd_major),
            drbdadm("adjust", res),
            *seed_remove(step.renamed_from),
        ]
    if k == StepKind.REMOVE_DISK:
        return [
            *_drbd_down(res),
            HelperRequest(
                verb="lv-remove",
                args=(disk.volume_group, res),
                summary=f"lvremove {disk.volume_group}/{res}",
                ok_if_stderr="Failed to find logical volume",
            ),
            *seed_remove(res),
        ]
    raise ValueError(f"{k.value} has no helper requests")
