"""Desired-state specifications: what operators declare about the cluster, nodes and
instances. These are the payloads of desired-state events and the desired half of
ClusterState.

Pure: no I/O, no logging. Sizes are integers in MiB everywhere. Secrets are never held
here, only references to them (`SecretRef`), so a spec can be logged, stored and
printed safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from events.ids import GroupName, InstanceName, NodeName


class PowerState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRef:
    """Where a secret comes from: an environment variable or a file. Never its value."""

    env: str | None = None
    file: str | None = None

    def describe(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FenceSpec:
    """A ClusterLabs-convention fence agent (`fence_ipmilan`, `fence_corral_sim`...)
    and its options (key=value lines on the agent's stdin). `secrets` maps option
    names (such as `password`) to references resolved only when the agent runs."""

    agent: str
    options: tuple[tuple[str, str], ...] = ()
    secrets: tuple[tuple[str, SecretRef], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    name: NodeName
    address: str  # SSH address
    port: int = 22
    replication_address: str | None = None  # DRBD address; defaults to `address`
    group: GroupName = GroupName("default")
    memory_mib: int
    disk_mib: int
    cpus: int
    host_memory_mib: int = 1024  # reserved for the host itself (Ganeti: n_mem)
    # CPUs the host keeps for itself (Ganeti: cpu_n); they count in the vCPU ratio
    host_cpus: int = 1
    volume_group: str = "corral"
    fence: FenceSpec | None = None
    tags: frozenset[str] = frozenset()
    drained: bool = False
    offline: bool = False
    ssh_user: str = "corral"

    @property
    def drbd_address(self) -> str:
        return self.replication_address or self.address


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskSpec:
    size_mib: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NicSpec:
    mac: str | None = None
    link: str = "br0"
    mode: str = "bridged"
    ip: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSpec:
    name: InstanceName
    memory_mib: int
    vcpus: int
    disks: tuple[DiskSpec, ...]
    os: str = "none"
    nics: tuple[NicSpec, ...] = ()
    tags: frozenset[str] = frozenset()
    power: PowerState = PowerState.RUNNING
    primary: NodeName | None = None  # optional pinning
    secondary: NodeName | None = None
    auto_balance: bool = True

    @property
    def disk_mib(self) -> int:
        return sum(d.size_mib for d in self.disks)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSpec:
    name: GroupName
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterPolicy:
    n_plus_one: bool = True
    vcpu_ratio: float = 4.0
    # Instance tags with one of these prefixes are anti-affine: two primaries
    # sharing such a tag avoid one node (Ganeti's htools:iextags).
    exclusion_tag_prefixes: tuple[str, ...] = ()
    # Node tags with one of these prefixes name failure domains (rack:, psu:):
    # primary and secondary of one instance never share one.
    failure_domain_prefixes: tuple[str, ...] = ()
    suspect_timeout_s: float = 3.0
    lost_timeout_s: float = 8.0
    default_sync: bool = False  # wait for initial DRBD sync before starting
    # The watcher restarts a VM that stopped by itself at most `restart_limit` times
    # on one node within `restart_window_s`, waiting restart_backoff_s, then twice
    # that, and so on (at most 60 s), after each start; then it is ERROR_down.
    restart_limit: int = 5
    restart_window_s: float = 600.0
    restart_backoff_s: float = 2.0
    extra: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredCluster:
    """Everything operators declared: the desired half of ClusterState, and what a
    desired-state file loads into. Mappings are keyed by name; treat them as
    read-only (they are replaced, never mutated, by the fold)."""

    name: str
    policy: ClusterPolicy = ClusterPolicy()
    groups: dict[GroupName, GroupSpec] = field(default_factory=dict)
    nodes: dict[NodeName, NodeSpec] = field(default_factory=dict)
    instances: dict[InstanceName, InstanceSpec] = field(default_factory=dict)
    etcd_endpoints: tuple[str, ...] = ()
