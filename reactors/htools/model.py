"""The cluster as Ganeti's htools see it: nodes with total/reserved/free memory and
disk, instances with a primary and a secondary node, cluster tags and an instance
policy. One flat, immutable value that both the htools text export and the cluster
score are computed from.

Pure: no I/O, no logging, no asyncio; nothing here decides or changes placement.

Sizes are MiB. Drained and offline nodes are kept apart here; htools treat both as
offline (their RAPI and Luxi loaders read `offline or drained`), and so does the
score. Totals (memory, disk, CPUs) are floats because htools read them as
Haskell Doubles; everything else a node or an instance reports is an integer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # offline planning on an htools file needs no event-log state
    from events.state import ClusterState

# Cluster tag prefixes htools read (Ganeti's Tags/Constants.hs).
EXCLUSION_TAG_PREFIX = "htools:iextags:"
LOCATION_TAG_PREFIX = "htools:nlocation:"

# Disk templates whose storage lives on the nodes (Ganeti: localStorageTemplates)
# and the one that has a secondary node.
LOCAL_STORAGE_TEMPLATES = frozenset({"drbd", "plain"})
MIRRORED_TEMPLATE = "drbd"
DISK_TEMPLATES = frozenset(
    {"diskless", "file", "sharedfile", "plain", "blockdev", "drbd", "rbd", "ext", "gluster"}
)

# Instance status words (Ganeti's InstanceStatus) and those whose memory htools
# count as in use on the primary (Instance.usesMemory).
MEMORY_STATUSES = frozenset(
    {"running", "ERROR_up", "ERROR_nodedown", "ERROR_nodeoffline", "ERROR_wrongnode"}
)
STATUSES = MEMORY_STATUSES | {"ADMIN_down", "ADMIN_offline", "ERROR_down", "USER_down"}

# Ganeti's default instance policy values (constants.py: IPOLICY_DEFAULTS). Only
# `spindle_ratio` changes the score; the rest is carried so an export is complete.
ISpec = tuple[int, int, int, int, int, int]  # mem, cpus, disk, disk count, nics, spindles
DEFAULT_STD_SPEC: ISpec = (128, 1, 1024, 1, 1, 1)
DEFAULT_MIN_SPEC: ISpec = (128, 1, 1024, 1, 1, 1)
DEFAULT_MAX_SPEC: ISpec = (32768, 8, 1048576, 16, 8, 12)
DEFAULT_VCPU_RATIO = 4.0
DEFAULT_SPINDLE_RATIO = 32.0

_UUID_NAMESPACE = "6f1d5c4e-6a55-4c55-9d0e-2f7f3c0b8a11"


@dataclass(frozen=True, slots=True, kw_only=True)
class BPolicy:
    """An htools instance policy: the standard spec, min/max spec pairs, allowed
    disk templates, the vcpu/pcpu ratio and the spindle ratio."""

    std_spec: ISpec = DEFAULT_STD_SPEC
    min_max: tuple[tuple[ISpec, ISpec], ...] = ((DEFAULT_MIN_SPEC, DEFAULT_MAX_SPEC),)
    disk_templates: tuple[str, ...] = ("drbd", "plain")
    vcpu_ratio: float = DEFAULT_VCPU_RATIO
    spindle_ratio: float = DEFAULT_SPINDLE_RATIO


@dataclass(frozen=True, slots=True, kw_only=True)
class BGroup:
    """A node group. `policy` None means htools' built-in default policy (what a
    text file without a policy line for the group gives)."""

    name: str
    uuid: str
    alloc_policy: str = "preferred"
    tags: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    policy: BPolicy | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Util:
    """An instance's dynamic utilisation (htools' DynUtil: cpu, memory, disk and
    network weights; each 1 unless a `-U` file says otherwise)."""

    cpu: float = 1.0
    mem: float = 1.0
    dsk: float = 1.0
    net: float = 1.0


BASE_UTIL = Util()


@dataclass(frozen=True, slots=True, kw_only=True)
class BNode:
    """One node. t_mem: total memory; n_mem: memory reserved for the host; f_mem:
    free memory as the node reported it (htools' state of world; it may disagree
    with t_mem - n_mem - memory of running primaries, the state of record);
    t_dsk/f_dsk: total and free disk; t_cpu: physical CPUs; os_cpus: CPUs the
    host keeps for itself; spindles/free_spindles: total and free spindles
    (free ones count only with exclusive storage)."""

    name: str
    t_mem: float
    n_mem: int
    f_mem: int
    t_dsk: float
    f_dsk: int
    t_cpu: float
    offline: bool = False
    drained: bool = False
    master: bool = False
    group: str = "default"
    tags: tuple[str, ...] = ()
    spindles: int = 1
    free_spindles: int = 0
    os_cpus: int = 1
    cpu_speed: float = 1.0
    exclusive_storage: bool = False

    @property
    def htools_offline(self) -> bool:
        """Whether htools treat the node as offline: skipped by the balancing
        statistics, its instances counted as to be evacuated."""
        return self.offline or self.drained


@dataclass(frozen=True, slots=True, kw_only=True)
class BInstance:
    """One instance. `dsk` is the sum of its disks; `snode` is None when it has
    no secondary node. `status` is Ganeti's status word (`STATUSES`);
    `forthcoming`: reserved, not yet created (htools count it only in the
    `*_forth` components); `disk_spindles`: the spindles its disks take with
    exclusive storage (None: unknown, "-" in the text format)."""

    name: str
    mem: int
    dsk: int
    vcpus: int
    status: str = "running"
    auto_balance: bool = True
    pnode: str
    snode: str | None
    tags: tuple[str, ...] = ()
    spindle_use: int = 1
    disk_template: str = MIRRORED_TEMPLATE
    disk_spindles: int | None = None
    forthcoming: bool = False
    util: Util = BASE_UTIL

    @property
    def running(self) -> bool:
        """Its status says its memory is in use on the primary."""
        return self.status in MEMORY_STATUSES

    @property
    def uses_memory(self) -> bool:
        """htools' usesMemory: running and not forthcoming."""
        return self.running and not self.forthcoming

    @property
    def offline(self) -> bool:
        """Administratively offline (ADMIN_offline: no vCPUs counted, no N+1
        reservation on the secondary)."""
        return self.status == "ADMIN_offline"

    @property
    def reserves(self) -> bool:
        """Whether its secondary reserves its memory for N+1 (htools' usesSecMem
        without forthcoming instances: auto-balanced and not ADMIN_offline,
        stopped or not)."""
        return self.auto_balance and not self.offline and not self.forthcoming

    @property
    def local_storage(self) -> bool:
        """Its disks live on its nodes (drbd, plain)."""
        return self.disk_template in LOCAL_STORAGE_TEMPLATES


@dataclass(frozen=True, slots=True, kw_only=True)
class BCluster:
    """Everything htools need to score and balance one cluster.

    `reserve_stopped` is corral's cluster policy on stopped instances (not part
    of the htools format): False, as htools do, a stopped primary holds no
    memory on its node, so the node's free memory for placing and for N+1 is its
    unallocated memory; True, its node keeps the memory free for it too (it can
    be started at any time without a move)."""

    nodes: tuple[BNode, ...]
    instances: tuple[BInstance, ...]
    groups: tuple[BGroup, ...] = ()
    cluster_tags: tuple[str, ...] = ()
    policy: BPolicy = BPolicy()
    reserve_stopped: bool = False
    # whether the planners keep the spindle-ratio policy (htools' hiSpindles:
    # no node's instances use more than the group's spindle_ratio times its
    # spindles); off for corral's own clusters, whose nodes declare no spindles
    spindle_policy: bool = True
    # instances the balancer must leave where they are, with the reason
    # (corral's; e.g. those spanning two node groups)
    pinned: dict[str, str] = field(default_factory=dict)

    @property
    def vcpu_ratio(self) -> float:
        return self.policy.vcpu_ratio

    def group_policy(self, group: str) -> BPolicy:
        """The policy htools apply to a group's nodes: the group's own policy
        line, else htools' default policy (not the cluster's)."""
        for g in self.groups:
            if g.name == group:
                return g.policy if g.policy is not None else BPolicy()
        return BPolicy()

    def node(self, name: str) -> BNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def exclusion_prefixes(self) -> tuple[str, ...]:
        """Instance tag prefixes htools treat as anti-affine (non-empty
        `htools:iextags:` cluster tags, prefix matched without a colon)."""
        return tuple(
            t[len(EXCLUSION_TAG_PREFIX) :]
            for t in self.cluster_tags
            if t.startswith(EXCLUSION_TAG_PREFIX) and len(t) > len(EXCLUSION_TAG_PREFIX)
        )

    def location_prefixes(self) -> tuple[str, ...]:
        """Node tag prefixes naming failure domains (`htools:nlocation:X` makes
        node tags `X:*` location tags)."""
        return tuple(
            t[len(LOCATION_TAG_PREFIX) :]
            for t in self.cluster_tags
            if t.startswith(LOCATION_TAG_PREFIX)
        )


def group_uuid(*, name: str) -> str:
    """A stable UUID for a group name (the text format links nodes to groups by it)."""
    import uuid  # not needed offline: a saved file has its UUIDs

    return str(uuid.uuid5(uuid.UUID(_UUID_NAMESPACE), name))


def _tag_prefix(prefix: str) -> str:
    return prefix[:-1] if prefix.endswith(":") else prefix


def from_state(*, state: ClusterState) -> BCluster:
    """The htools view of a folded state: declared nodes, placed instances.

    Instances without a placement, or placed on an undeclared node, have no place
    in htools' model and are left out."""
    # the event model's specs, imported only here: offline planning on an
    # htools file (`corral balance --htools`) never needs them
    from events.specs import PowerState

    desired = state.desired
    placed: list[BInstance] = []
    for name in sorted(state.placements):
        placement = state.placements[name]
        spec = desired.instances.get(name)
        if spec is None:
            continue
        if placement.primary not in desired.nodes or placement.secondary not in desired.nodes:
            continue
        placed.append(
            BInstance(
                name=spec.name,
                mem=spec.memory_mib,
                dsk=spec.disk_mib,
                vcpus=spec.vcpus,
                status="running" if spec.power == PowerState.RUNNING else "ADMIN_down",
                auto_balance=spec.auto_balance,
                pnode=placement.primary,
                snode=placement.secondary,
                tags=tuple(sorted(spec.tags)),
            )
        )
    mem_used: dict[str, int] = {}
    dsk_used: dict[str, int] = {}
    for inst in placed:
        if inst.running:
            mem_used[inst.pnode] = mem_used.get(inst.pnode, 0) + inst.mem
        for holder in (inst.pnode, inst.snode):
            if holder is not None:
                dsk_used[holder] = dsk_used.get(holder, 0) + inst.dsk
    nodes = tuple(
        BNode(
            name=spec.name,
            t_mem=spec.memory_mib,
            n_mem=spec.host_memory_mib,
            f_mem=spec.memory_mib - spec.host_memory_mib - mem_used.get(spec.name, 0),
            t_dsk=spec.disk_mib,
            f_dsk=spec.disk_mib - dsk_used.get(spec.name, 0),
            t_cpu=spec.cpus,
            os_cpus=spec.host_cpus,
            offline=spec.offline,
            drained=spec.drained,
            group=spec.group,
            tags=tuple(sorted(spec.tags)),
        )
        for _, spec in sorted(desired.nodes.items())
    )
    policy = BPolicy(vcpu_ratio=desired.policy.vcpu_ratio)
    group_tags: dict[str, tuple[str, ...]] = {
        name: tuple(sorted(g.tags)) for name, g in desired.groups.items()
    }
    group_names = sorted(set(group_tags) | {n.group for n in nodes})
    groups = tuple(
        BGroup(name=g, uuid=group_uuid(name=g), tags=group_tags.get(g, ()), policy=policy)
        for g in group_names
    )
    ctags: list[str] = []
    for prefix in desired.policy.exclusion_tag_prefixes:
        tag = EXCLUSION_TAG_PREFIX + _tag_prefix(prefix)
        if tag not in ctags:
            ctags.append(tag)
    for prefix in desired.policy.failure_domain_prefixes:
        tag = LOCATION_TAG_PREFIX + _tag_prefix(prefix)
        if tag not in ctags:
            ctags.append(tag)
    return BCluster(
        nodes=nodes,
        instances=tuple(placed),
        groups=groups,
        cluster_tags=tuple(ctags),
        policy=policy,
        reserve_stopped=desired.policy.reserve_stopped_memory,
        spindle_policy=False,
    )
