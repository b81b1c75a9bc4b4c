"""The instances section of a desired-state file read into specs, with
`defaults.instance` laid under each: every entry checked key by key (the model's
field rules through `orchestrator.desired.schema`, the image catalogue through
`orchestrator.desired.images`), its pinned nodes declared, its size one some node
could hold, its hvparams consistent with its group's and the cluster's, and its
MAC addresses used once.

Pure: no I/O, no logging. Must not raise for any input: problems are recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from events.ids import InstanceName, NodeName
from events.specs import (
    CloudInitSpec,
    DiskSpec,
    HvParams,
    InstanceSpec,
    NicSpec,
    NodeSpec,
    PowerState,
)
from orchestrator.desired import images as img
from orchestrator.desired import schema as s
from orchestrator.desired import values as v
from orchestrator.desired.entry_checks import duplicate, or_default, pin, spanning
from orchestrator.desired.schema import At, Problems, YamlMapping

_INSTANCE_DEFAULT_KEYS = (
    "memory",
    "vcpus",
    "disks",
    "os",
    "nics",
    "tags",
    "auto_balance",
    "cloud_init",
)
_INSTANCE_KEYS = (
    "name",
    "memory",
    "vcpus",
    "disks",
    "os",
    "nics",
    "tags",
    "state",
    "primary",
    "secondary",
    "auto_balance",
    "hvparams",
    "cloud_init",
    "osparams",
)
_STATES = ("running", "stopped", "absent")
_NO_TAGS: frozenset[str] = frozenset()
_NO_NICS: tuple[NicSpec, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceDefaults:
    memory: int | None = None
    vcpus: int = 1
    disks: tuple[DiskSpec, ...] | None = None
    os: str = "none"
    nics: tuple[NicSpec, ...] = ()
    tags: frozenset[str] = frozenset()
    auto_balance: bool = True
    cloud_init: CloudInitSpec = CloudInitSpec()


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceEntry:
    spec: InstanceSpec | None  # None when absent or invalid
    name: InstanceName
    absent: bool
    where: YamlMapping


def instance_defaults(problems: Problems, value: Any, at: At) -> InstanceDefaults:
    m = YamlMapping(problems, value, at, allowed=_INSTANCE_DEFAULT_KEYS, what="defaults.instance")
    base = InstanceDefaults()
    return InstanceDefaults(
        memory=m.opt("memory", s.size, None),
        vcpus=or_default(m.opt("vcpus", s.rule(InstanceSpec, "vcpus"), base.vcpus), base.vcpus),
        disks=m.opt("disks", v.disks, None),
        os=or_default(m.opt("os", s.rule(InstanceSpec, "os"), base.os), base.os),
        nics=or_default(m.opt("nics", v.nics, _NO_NICS), _NO_NICS),
        tags=or_default(m.opt("tags", s.rule(InstanceSpec, "tags"), _NO_TAGS), _NO_TAGS),
        auto_balance=or_default(m.opt("auto_balance", s.boolean, True), True),
        cloud_init=or_default(
            m.opt("cloud_init", img.cloud_init, base.cloud_init), base.cloud_init
        ),
    )


def read_instances(
    problems: Problems,
    entries: list[tuple[int, Any, At]],
    d: InstanceDefaults,
    nodes: dict[NodeName, tuple[NodeSpec, YamlMapping]],
    declared: frozenset[str],
    *,
    hv_base: Callable[[NodeName | None], HvParams] = lambda _: HvParams(),
    catalogue: img.Catalogue | None = None,
) -> list[InstanceEntry]:
    """`hv_base(primary)`: the hvparams an instance's own are laid over (its pinned
    primary's group's over the cluster's; the cluster's when not pinned)."""
    out: list[InstanceEntry] = []
    first: dict[str, At] = {}
    macs: dict[str, At] = {}
    specs = [spec for spec, _ in nodes.values()]
    roomiest = max(specs, key=lambda n: n.memory_mib - n.host_memory_mib, default=None)
    biggest = max(specs, key=lambda n: n.disk_mib, default=None)
    for _, item, at in entries:
        m = YamlMapping(problems, item, at, allowed=_INSTANCE_KEYS, what="an instance")
        if not m.ok:
            continue
        name = m.req("name", s.rule(InstanceSpec, "name"))
        if name is not None and duplicate(
            problems, first, name, m.value_at("name"), what="instance"
        ):
            name = None
        inst = _instance(
            problems,
            m,
            d,
            declared,
            name,
            catalogue=catalogue or img.Catalogue(images={}, broken=frozenset()),
        )
        if inst is None or inst.spec is None:
            if inst is not None:
                out.append(inst)
            continue
        spec = inst.spec
        if (
            roomiest is not None
            and spec.memory_mib > roomiest.memory_mib - roomiest.host_memory_mib
        ):
            usable = roomiest.memory_mib - roomiest.host_memory_mib
            problems.add(
                m.value_at("memory") if m.has("memory") else m.at,
                f"impossible size: memory {s.fmt_mib(spec.memory_mib)} is more than any node "
                f"can give an instance (at most {s.fmt_mib(usable)} on {roomiest.name}: "
                "memory - host_memory)",
            )
        if biggest is not None and spec.disk_mib > biggest.disk_mib:
            problems.add(
                m.value_at("disks") if m.has("disks") else m.at,
                f"impossible size: disks total {s.fmt_mib(spec.disk_mib)}, more than any "
                f"node has (at most {s.fmt_mib(biggest.disk_mib)} on {biggest.name})",
            )
        for conflict in spec.hv.over(hv_base(spec.primary)).conflicts():
            problems.add(
                m.value_at("hvparams") if m.has("hvparams") else m.at,
                f"hvparams (with the group's and cluster's): {conflict}",
            )
        for i, nic in enumerate(spec.nics):
            if nic.mac is None:
                continue
            nic_at = m.value_at("nics")
            nic_at = s.item_at(m.value.get("nics"), i, nic_at, m.at.sub(f"nics[{i}].mac"))
            if nic.mac in macs:
                problems.add(
                    nic_at,
                    f"MAC address {nic.mac} is already used ({macs[nic.mac].line_ref(nic_at)})",
                )
            else:
                macs[nic.mac] = nic_at
        out.append(inst)
    return out


def _instance(
    problems: Problems,
    m: YamlMapping,
    d: InstanceDefaults,
    declared: frozenset[str],
    name: str | None,
    *,
    catalogue: img.Catalogue,
) -> InstanceEntry | None:
    state = m.opt("state", s.choice(_STATES), "running")
    absent = state == "absent"
    # An absent instance needs only its name; whatever else it says is still checked.
    if absent:
        memory = m.opt("memory", s.size, d.memory)
        disks = m.opt("disks", v.disks, d.disks)
    else:
        memory = m.req("memory", s.size, d.memory)
        disks = m.req("disks", v.disks, d.disks)
    vcpus = m.opt("vcpus", s.rule(InstanceSpec, "vcpus"), d.vcpus)
    os_name = m.opt("os", s.rule(InstanceSpec, "os"), d.os)
    nics = m.opt("nics", v.nics, d.nics)
    inst_tags = m.opt("tags", s.rule(InstanceSpec, "tags"), d.tags)
    auto_balance = m.opt("auto_balance", s.boolean, d.auto_balance)
    hv = m.opt("hvparams", v.hvparams, HvParams())
    primary = pin(problems, m, "primary", declared)
    secondary = pin(problems, m, "secondary", declared)
    seed = m.opt("cloud_init", img.cloud_init_over(d.cloud_init), d.cloud_init)
    os_ok, image = img.resolve_os(problems, m, os_name=os_name or img.NO_OS, catalogue=catalogue)
    if name is None:
        return None
    if absent:
        return InstanceEntry(spec=None, name=InstanceName(name), absent=True, where=m)
    if (
        state is None
        or memory is None
        or disks is None
        or vcpus is None
        or os_name is None
        or nics is None
        or inst_tags is None
        or auto_balance is None
        or hv is None
        or primary is None
        or secondary is None
        or seed is None
        or not os_ok
    ):
        return InstanceEntry(spec=None, name=InstanceName(name), absent=False, where=m)
    spec = InstanceSpec(
        name=InstanceName(name),
        memory_mib=memory,
        vcpus=vcpus,
        disks=disks,
        os=os_name,
        nics=nics,
        tags=inst_tags,
        power=PowerState(state),
        primary=NodeName(primary) if primary else None,
        secondary=NodeName(secondary) if secondary else None,
        auto_balance=auto_balance,
        hv=hv,
        image=image,
        # A Ganeti OS definition's guest gets a cloud-init seed only when asked for.
        cloud_init=seed
        if image is not None and (not image.ganeti_os or m.has("cloud_init"))
        else None,
    )
    if spanning(problems, m, spec):
        return InstanceEntry(spec=None, name=InstanceName(name), absent=False, where=m)
    return InstanceEntry(spec=spec, name=InstanceName(name), absent=False, where=m)
