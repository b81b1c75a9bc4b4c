"""The sections of a desired-state file read into specs: the cluster (name, etcd,
policy, hvparams, defaults), groups and nodes, each entry checked key by key (the
model's field rules through `orchestrator.desired.schema`, and the rules that span
fields), duplicates, declared groups, and nodes no larger than they can be. The
instances section is `orchestrator.desired.instances`'. Every problem is recorded
with its position.

Pure: no I/O, no logging. Must not raise for any input: problems are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from events.fields.network import locally_administered
from events.ids import GroupName, NodeName
from events.specs import (
    ClusterPolicy,
    DesiredCluster,
    FenceSpec,
    GroupSpec,
    HvParams,
    InstanceSpec,
    NicSpec,
    NodeSpec,
)
from orchestrator.desired import schema as s
from orchestrator.desired import values as v
from orchestrator.desired.entry_checks import duplicate, or_default, some_names, spanning
from orchestrator.desired.instances import InstanceDefaults, instance_defaults
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
class _Header:
    name: str | None
    etcd: tuple[str, ...]
    policy: ClusterPolicy
    node_defaults: _NodeDefaults
    instance_defaults: InstanceDefaults


def read_cluster(problems: Problems, value: Any, at: At) -> _Header:
    m = YamlMapping(problems, value, at, allowed=_CLUSTER_KEYS, what="cluster")
    name = m.req("name", s.name("cluster name")) if m.ok else None
    etcd = m.opt("etcd", s.rule(DesiredCluster, "etcd_endpoints"), _NO_STRS)
    policy = ClusterPolicy()
    if m.has("policy"):
        policy = _policy(problems, *m.get("policy"))
    hv = m.opt("hvparams", v.hvparams, HvParams())
    if hv is not None:
        policy = replace(policy, hv=hv)
    node_defaults, inst_defaults = _NodeDefaults(), InstanceDefaults()
    if m.has("defaults"):
        d = YamlMapping(problems, *m.get("defaults"), allowed=("node", "instance"), what="defaults")
        if d.has("node"):
            node_defaults = _node_defaults(problems, *d.get("node"))
        if d.has("instance"):
            inst_defaults = instance_defaults(problems, *d.get("instance"))
    return _Header(
        name=name,
        etcd=etcd or (),
        policy=policy,
        node_defaults=node_defaults,
        instance_defaults=inst_defaults,
    )


def _policy(problems: Problems, value: Any, at: At) -> ClusterPolicy:
    m = YamlMapping(problems, value, at, allowed=_POLICY_KEYS, what="policy")
    base = ClusterPolicy()
    prefixes = s.rule(ClusterPolicy, "exclusion_tag_prefixes")
    suspect = m.opt("suspect_timeout", s.duration, base.suspect_timeout_s)
    lost = m.opt("lost_timeout", s.duration, base.lost_timeout_s)
    policy = ClusterPolicy(
        n_plus_one=or_default(m.opt("n_plus_one", s.boolean, base.n_plus_one), base.n_plus_one),
        vcpu_ratio=or_default(
            m.opt("vcpu_ratio", s.rule(ClusterPolicy, "vcpu_ratio"), base.vcpu_ratio),
            base.vcpu_ratio,
        ),
        exclusion_tag_prefixes=or_default(
            m.opt("exclusion_tag_prefixes", prefixes, _NO_STRS), _NO_STRS
        ),
        failure_domain_prefixes=or_default(
            m.opt("failure_domain_prefixes", prefixes, _NO_STRS), _NO_STRS
        ),
        reserve_stopped_memory=or_default(
            m.opt("reserve_stopped_memory", s.boolean, base.reserve_stopped_memory),
            base.reserve_stopped_memory,
        ),
        suspect_timeout_s=or_default(suspect, base.suspect_timeout_s),
        lost_timeout_s=or_default(lost, base.lost_timeout_s),
        default_sync=or_default(m.opt("wait_for_sync", s.boolean, base.default_sync), False),
        restart_limit=or_default(
            m.opt("restart_limit", s.rule(ClusterPolicy, "restart_limit"), base.restart_limit),
            base.restart_limit,
        ),
        restart_window_s=or_default(
            m.opt("restart_window", s.duration, base.restart_window_s), base.restart_window_s
        ),
        restart_backoff_s=or_default(
            m.opt("restart_backoff", s.duration, base.restart_backoff_s), base.restart_backoff_s
        ),
        mac_prefix=or_default(
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
    spanning(problems, m, policy)
    return policy


def _node_defaults(problems: Problems, value: Any, at: At) -> _NodeDefaults:
    m = YamlMapping(problems, value, at, allowed=_NODE_DEFAULT_KEYS, what="defaults.node")
    base = _NodeDefaults()
    return _NodeDefaults(
        port=or_default(m.opt("port", s.rule(NodeSpec, "port"), base.port), base.port),
        group=or_default(m.opt("group", s.rule(GroupSpec, "name"), base.group), base.group),
        memory=m.opt("memory", s.size, None),
        disk=m.opt("disk", s.size, None),
        cpus=m.opt("cpus", s.rule(NodeSpec, "cpus"), None),
        host_memory=or_default(m.opt("host_memory", s.size, base.host_memory), base.host_memory),
        host_cpus=or_default(
            m.opt("host_cpus", s.rule(NodeSpec, "host_cpus"), base.host_cpus), base.host_cpus
        ),
        volume_group=or_default(
            m.opt("volume_group", s.rule(NodeSpec, "volume_group"), "corral"), "corral"
        ),
        ssh_user=or_default(m.opt("ssh_user", s.rule(NodeSpec, "ssh_user"), "corral"), "corral"),
        tags=or_default(m.opt("tags", s.rule(InstanceSpec, "tags"), _NO_TAGS), _NO_TAGS),
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
        hv = m.opt("hvparams", v.hvparams, HvParams())
        if name is None:
            continue
        if duplicate(problems, first, name, m.value_at("name"), what="group"):
            continue
        if group_tags is not None and hv is not None:
            groups[GroupName(name)] = GroupSpec(name=GroupName(name), tags=group_tags, hv=hv)
    return groups


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
        if name is not None and duplicate(problems, first, name, m.value_at("name"), what="node"):
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
        declared = some_names({"default", *groups})
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
        fence = v.fence(problems, *m.get("fence"))
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
    return None if spanning(problems, m, spec) else spec
