"""The sections of a desired-state file read into specs: the cluster (name, etcd,
policy, defaults), groups, nodes and instances, each entry checked key by key (the
model's field rules through `orchestrator.desired.schema`, and the rules that span
fields), duplicates, declared groups and nodes, pins, MAC addresses used twice, and
sizes no node could hold. Every problem is recorded with its position.

Pure: no I/O, no logging. Must not raise for any input: problems are recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from events.fields.network import locally_administered
from events.ids import GroupName, InstanceName, NodeName
from events.specs import (
    CloudInitSpec,
    ClusterPolicy,
    DesiredCluster,
    DiskSpec,
    FenceSpec,
    GroupSpec,
    HvParams,
    InstanceSpec,
    NicSpec,
    NodeSpec,
    PowerState,
)
from events.validation import cross_problems
from orchestrator.desired import images as img
from orchestrator.desired import schema as s
from orchestrator.desired.schema import At, Problems, YamlMapping

_CLUSTER_KEYS = ("name", "etcd", "policy", "defaults", "hvparams")
_POLICY_KEYS = (
    "n_plus_one",
    "vcpu_ratio",
    "exclusion_tag_prefixes",
    "failure_domain_prefixes",
    "reserve_stopped_memory",
    "suspect_timeout",
    "lost_timeout",
    "wait_for_sync",
    "restart_limit",
    "restart_window",
    "restart_backoff",
    "mac_prefix",
)
_GROUP_KEYS = ("name", "tags", "hvparams")
_NODE_DEFAULT_KEYS = (
    "port",
    "group",
    "memory",
    "disk",
    "cpus",
    "host_memory",
    "host_cpus",
    "volume_group",
    "ssh_user",
    "tags",
)
_NODE_KEYS = (
    "name",
    "address",
    "port",
    "replication_address",
    "group",
    "memory",
    "disk",
    "cpus",
    "host_memory",
    "host_cpus",
    "volume_group",
    "ssh_user",
    "tags",
    "drained",
    "offline",
    "fence",
)
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
)
_STATES = ("running", "stopped", "absent")

T = TypeVar("T")
_NO_STRS: tuple[str, ...] = ()
_NO_TAGS: frozenset[str] = frozenset()
_NO_NICS: tuple[NicSpec, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class _NodeDefaults:
    port: int = 22
    group: str = "default"
    memory: int | None = None
    disk: int | None = None
    cpus: int | None = None
    host_memory: int = 1024
    host_cpus: int = 1
    volume_group: str = "corral"
    ssh_user: str = "corral"
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class _InstanceDefaults:
    memory: int | None = None
    vcpus: int = 1
    disks: tuple[DiskSpec, ...] | None = None
    os: str = "none"
    nics: tuple[NicSpec, ...] = ()
    tags: frozenset[str] = frozenset()
    auto_balance: bool = True
    cloud_init: CloudInitSpec = CloudInitSpec()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Instance:
    spec: InstanceSpec | None  # None when absent or invalid
    name: InstanceName
    absent: bool
    where: YamlMapping


@dataclass(frozen=True, slots=True, kw_only=True)
class _Header:
    name: str | None
    etcd: tuple[str, ...]
    policy: ClusterPolicy
    node_defaults: _NodeDefaults
    instance_defaults: _InstanceDefaults


def read_cluster(problems: Problems, value: Any, at: At) -> _Header:
    m = YamlMapping(problems, value, at, allowed=_CLUSTER_KEYS, what="cluster")
    name = m.req("name", s.name("cluster name")) if m.ok else None
    etcd = m.opt("etcd", s.rule(DesiredCluster, "etcd_endpoints"), _NO_STRS)
    policy = ClusterPolicy()
    if m.has("policy"):
        policy = _policy(problems, *m.get("policy"))
    hv = m.opt("hvparams", s.hvparams, HvParams())
    if hv is not None:
        policy = replace(policy, hv=hv)
    node_defaults, instance_defaults = _NodeDefaults(), _InstanceDefaults()
    if m.has("defaults"):
        d = YamlMapping(problems, *m.get("defaults"), allowed=("node", "instance"), what="defaults")
        if d.has("node"):
            node_defaults = _node_defaults(problems, *d.get("node"))
        if d.has("instance"):
            instance_defaults = _instance_defaults(problems, *d.get("instance"))
    return _Header(
        name=name,
        etcd=etcd or (),
        policy=policy,
        node_defaults=node_defaults,
        instance_defaults=instance_defaults,
    )


def _policy(problems: Problems, value: Any, at: At) -> ClusterPolicy:
    m = YamlMapping(problems, value, at, allowed=_POLICY_KEYS, what="policy")
    base = ClusterPolicy()
    prefixes = s.rule(ClusterPolicy, "exclusion_tag_prefixes")
    suspect = m.opt("suspect_timeout", s.duration, base.suspect_timeout_s)
    lost = m.opt("lost_timeout", s.duration, base.lost_timeout_s)
    policy = ClusterPolicy(
        n_plus_one=_or(m.opt("n_plus_one", s.boolean, base.n_plus_one), base.n_plus_one),
        vcpu_ratio=_or(
            m.opt("vcpu_ratio", s.rule(ClusterPolicy, "vcpu_ratio"), base.vcpu_ratio),
            base.vcpu_ratio,
        ),
        exclusion_tag_prefixes=_or(m.opt("exclusion_tag_prefixes", prefixes, _NO_STRS), _NO_STRS),
        failure_domain_prefixes=_or(m.opt("failure_domain_prefixes", prefixes, _NO_STRS), _NO_STRS),
        reserve_stopped_memory=_or(
            m.opt("reserve_stopped_memory", s.boolean, base.reserve_stopped_memory),
            base.reserve_stopped_memory,
        ),
        suspect_timeout_s=_or(suspect, base.suspect_timeout_s),
        lost_timeout_s=_or(lost, base.lost_timeout_s),
        default_sync=_or(m.opt("wait_for_sync", s.boolean, base.default_sync), False),
        restart_limit=_or(
            m.opt("restart_limit", s.rule(ClusterPolicy, "restart_limit"), base.restart_limit),
            base.restart_limit,
        ),
        restart_window_s=_or(
            m.opt("restart_window", s.duration, base.restart_window_s), base.restart_window_s
        ),
        restart_backoff_s=_or(
            m.opt("restart_backoff", s.duration, base.restart_backoff_s), base.restart_backoff_s
        ),
        mac_prefix=_or(
            m.opt("mac_prefix", s.rule(ClusterPolicy, "mac_prefix"), base.mac_prefix),
            base.mac_prefix,
        ),
    )
    if m.has("mac_prefix") and not locally_administered(policy.mac_prefix):
        problems.warn(
            m.value_at("mac_prefix"),
            f"mac_prefix {policy.mac_prefix} is not locally administered (its first octet "
            "lacks the 0x02 bit): generated MACs may clash with a vendor's burnt-in "
            "addresses on the same network",
        )
    _spanning(problems, m, policy)
    return policy


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _node_defaults(problems: Problems, value: Any, at: At) -> _NodeDefaults:
    m = YamlMapping(problems, value, at, allowed=_NODE_DEFAULT_KEYS, what="defaults.node")
    base = _NodeDefaults()
    return _NodeDefaults(
        port=_or(m.opt("port", s.rule(NodeSpec, "port"), base.port), base.port),
        group=_or(m.opt("group", s.rule(GroupSpec, "name"), base.group), base.group),
        memory=m.opt("memory", s.size, None),
        disk=m.opt("disk", s.size, None),
        cpus=m.opt("cpus", s.rule(NodeSpec, "cpus"), None),
        host_memory=_or(m.opt("host_memory", s.size, base.host_memory), base.host_memory),
        host_cpus=_or(
            m.opt("host_cpus", s.rule(NodeSpec, "host_cpus"), base.host_cpus), base.host_cpus
        ),
        volume_group=_or(
            m.opt("volume_group", s.rule(NodeSpec, "volume_group"), "corral"), "corral"
        ),
        ssh_user=_or(m.opt("ssh_user", s.rule(NodeSpec, "ssh_user"), "corral"), "corral"),
        tags=_or(m.opt("tags", s.rule(InstanceSpec, "tags"), _NO_TAGS), _NO_TAGS),
    )


def _instance_defaults(problems: Problems, value: Any, at: At) -> _InstanceDefaults:
    m = YamlMapping(problems, value, at, allowed=_INSTANCE_DEFAULT_KEYS, what="defaults.instance")
    base = _InstanceDefaults()
    return _InstanceDefaults(
        memory=m.opt("memory", s.size, None),
        vcpus=_or(m.opt("vcpus", s.rule(InstanceSpec, "vcpus"), base.vcpus), base.vcpus),
        disks=m.opt("disks", s.disks, None),
        os=_or(m.opt("os", s.rule(InstanceSpec, "os"), base.os), base.os),
        nics=_or(m.opt("nics", s.nics, _NO_NICS), _NO_NICS),
        tags=_or(m.opt("tags", s.rule(InstanceSpec, "tags"), _NO_TAGS), _NO_TAGS),
        auto_balance=_or(m.opt("auto_balance", s.boolean, True), True),
        cloud_init=_or(m.opt("cloud_init", img.cloud_init, base.cloud_init), base.cloud_init),
    )


def read_groups(
    problems: Problems, entries: list[tuple[int, Any, At]]
) -> dict[GroupName, GroupSpec]:
    groups: dict[GroupName, GroupSpec] = {}
    first: dict[str, At] = {}
    for _, item, at in entries:
        m = YamlMapping(problems, item, at, allowed=_GROUP_KEYS, what="a group")
        if not m.ok:
            continue
        name = m.req("name", s.rule(GroupSpec, "name"))
        group_tags = m.opt("tags", s.rule(InstanceSpec, "tags"), _NO_TAGS)
        hv = m.opt("hvparams", s.hvparams, HvParams())
        if name is None:
            continue
        if _duplicate(problems, first, name, m.value_at("name"), what="group"):
            continue
        if group_tags is not None and hv is not None:
            groups[GroupName(name)] = GroupSpec(name=GroupName(name), tags=group_tags, hv=hv)
    return groups


def _duplicate(problems: Problems, first: dict[str, At], name: str, at: At, *, what: str) -> bool:
    """Report `name` if it was seen before; remember it otherwise."""
    if name in first:
        problems.add(
            at,
            f"duplicate {what} name {name!r} (first declared at {first[name].line_ref(at)})",
        )
        return True
    first[name] = at
    return False


def read_nodes(
    problems: Problems,
    entries: list[tuple[int, Any, At]],
    d: _NodeDefaults,
    groups: dict[GroupName, GroupSpec],
) -> dict[NodeName, tuple[NodeSpec, YamlMapping]]:
    nodes: dict[NodeName, tuple[NodeSpec, YamlMapping]] = {}
    first: dict[str, At] = {}
    endpoints: dict[tuple[str, int], tuple[str, At]] = {}
    for _, item, at in entries:
        m = YamlMapping(problems, item, at, allowed=_NODE_KEYS, what="a node")
        if not m.ok:
            continue
        name = m.req("name", s.rule(NodeSpec, "name"))
        if name is not None and _duplicate(problems, first, name, m.value_at("name"), what="node"):
            name = None
        spec = _node(problems, m, d, groups, name)
        if spec is None or name is None:
            continue
        endpoint = (spec.address, spec.port)
        if endpoint in endpoints:
            other, other_at = endpoints[endpoint]
            problems.add(
                m.value_at("address"),
                f"node {other!r} ({other_at.line_ref(at)}) already has SSH address "
                f"{spec.address}:{spec.port}; each node needs its own",
            )
            continue
        endpoints[endpoint] = (name, m.value_at("name"))
        nodes[NodeName(name)] = (spec, m)
    return nodes


def _node(
    problems: Problems,
    m: YamlMapping,
    d: _NodeDefaults,
    groups: dict[GroupName, GroupSpec],
    name: str | None,
) -> NodeSpec | None:
    address = m.req("address", s.rule(NodeSpec, "address"))
    port = m.opt("port", s.rule(NodeSpec, "port"), d.port)
    replication = m.opt("replication_address", s.rule(NodeSpec, "address"), "")
    group = m.opt("group", s.rule(GroupSpec, "name"), d.group)
    if group is not None and group != "default" and group not in groups:
        declared = _some({"default", *groups})
        problems.add(
            m.value_at("group") if m.has("group") else m.at,
            f"group {group!r} is not declared; declared groups: {declared}",
        )
        group = None
    memory = m.req("memory", s.size, d.memory)
    disk = m.req("disk", s.size, d.disk)
    cpus = m.req("cpus", s.rule(NodeSpec, "cpus"), d.cpus)
    host_memory = m.opt("host_memory", s.size, d.host_memory)
    host_cpus = m.opt("host_cpus", s.rule(NodeSpec, "host_cpus"), d.host_cpus)
    volume_group = m.opt("volume_group", s.rule(NodeSpec, "volume_group"), d.volume_group)
    ssh_user = m.opt("ssh_user", s.rule(NodeSpec, "ssh_user"), d.ssh_user)
    node_tags = m.opt("tags", s.rule(InstanceSpec, "tags"), d.tags)
    drained = m.opt("drained", s.boolean, False)
    offline = m.opt("offline", s.boolean, False)
    fence: FenceSpec | None = None
    if m.has("fence"):
        fence = s.fence(problems, *m.get("fence"))
    else:
        m.missing(
            "fence",
            "fence agent missing: every node needs `fence:` with an agent (e.g. "
            "`fence: {agent: fence_ipmilan, options: {...}}`) so that a lost node can be "
            "powered off before its instances move",
        )
    if (
        name is None
        or address is None
        or port is None
        or replication is None
        or group is None
        or memory is None
        or disk is None
        or cpus is None
        or host_memory is None
        or host_cpus is None
        or volume_group is None
        or ssh_user is None
        or node_tags is None
        or drained is None
        or offline is None
        or fence is None
    ):
        return None
    spec = NodeSpec(
        name=NodeName(name),
        address=address,
        port=port,
        replication_address=replication or None,
        group=GroupName(group),
        memory_mib=memory,
        disk_mib=disk,
        cpus=cpus,
        host_memory_mib=host_memory,
        host_cpus=host_cpus,
        volume_group=volume_group,
        fence=fence,
        tags=node_tags,
        drained=drained,
        offline=offline,
        ssh_user=ssh_user,
    )
    return None if _spanning(problems, m, spec) else spec


def read_instances(
    problems: Problems,
    entries: list[tuple[int, Any, At]],
    d: _InstanceDefaults,
    nodes: dict[NodeName, tuple[NodeSpec, YamlMapping]],
    declared: frozenset[str],
    *,
    hv_base: Callable[[NodeName | None], HvParams] = lambda _: HvParams(),
    catalogue: img.Catalogue | None = None,
) -> list[_Instance]:
    """`hv_base(primary)`: the hvparams an instance's own are laid over (its pinned
    primary's group's over the cluster's; the cluster's when not pinned)."""
    out: list[_Instance] = []
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
        if name is not None and _duplicate(
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
    d: _InstanceDefaults,
    declared: frozenset[str],
    name: str | None,
    *,
    catalogue: img.Catalogue,
) -> _Instance | None:
    state = m.opt("state", s.choice(_STATES), "running")
    absent = state == "absent"
    # An absent instance needs only its name; whatever else it says is still checked.
    if absent:
        memory = m.opt("memory", s.size, d.memory)
        disks = m.opt("disks", s.disks, d.disks)
    else:
        memory = m.req("memory", s.size, d.memory)
        disks = m.req("disks", s.disks, d.disks)
    vcpus = m.opt("vcpus", s.rule(InstanceSpec, "vcpus"), d.vcpus)
    os_name = m.opt("os", s.rule(InstanceSpec, "os"), d.os)
    nics = m.opt("nics", s.nics, d.nics)
    inst_tags = m.opt("tags", s.rule(InstanceSpec, "tags"), d.tags)
    auto_balance = m.opt("auto_balance", s.boolean, d.auto_balance)
    hv = m.opt("hvparams", s.hvparams, HvParams())
    primary = _pin(problems, m, "primary", declared)
    secondary = _pin(problems, m, "secondary", declared)
    seed = m.opt("cloud_init", img.cloud_init_over(d.cloud_init), d.cloud_init)
    os_ok, image = img.resolve_os(problems, m, os_name=os_name or img.NO_OS, catalogue=catalogue)
    if name is None:
        return None
    if absent:
        return _Instance(spec=None, name=InstanceName(name), absent=True, where=m)
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
        return _Instance(spec=None, name=InstanceName(name), absent=False, where=m)
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
        cloud_init=seed if image is not None else None,
    )
    if _spanning(problems, m, spec):
        return _Instance(spec=None, name=InstanceName(name), absent=False, where=m)
    return _Instance(spec=spec, name=InstanceName(name), absent=False, where=m)


# A rule spanning fields names the model's field; the file says it with these keys,
# the first one present taking the blame.
_BLAME = {
    "host_memory_mib": ("host_memory", "memory"),
    "host_cpus": ("host_cpus", "cpus"),
    "secondary": ("secondary",),
    "lost_timeout_s": ("lost_timeout", "suspect_timeout"),
}


def _spanning(problems: Problems, m: YamlMapping, spec: object) -> bool:
    """The model's rules that span fields (`events.validation`), reported at the key
    to blame; True when any is broken."""
    found = cross_problems(spec)
    for problem in found:
        keys = _BLAME.get(str(problem.loc[0]), ()) if problem.loc else ()
        key = next((k for k in keys if m.has(k)), None)
        problems.add(m.value_at(key) if key else m.at, problem.message)
    return bool(found)


def _pin(problems: Problems, m: YamlMapping, key: str, declared: frozenset[str]) -> str | None:
    """A pinned node name; "" when not pinned; None when invalid (reported)."""
    node = m.opt(key, s.rule(NodeSpec, "name"), "")
    if node and node not in declared:
        problems.add(
            m.value_at(key), f"node {node!r} is not declared; declared nodes: {_some(declared)}"
        )
        return None
    return node


def _some(names: frozenset[str] | set[str]) -> str:
    """Up to 10 names for a message."""
    shown = sorted(names)
    if not shown:
        return "none"
    return ", ".join(shown[:10]) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")
