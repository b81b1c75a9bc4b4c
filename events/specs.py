"""Desired-state specifications: what operators declare about the cluster, nodes and
instances. These are the payloads of desired-state events and the desired half of
ClusterState.

Pure: no I/O, no logging. Sizes are integers in MiB everywhere. No secret and no
reference to one is held here (fence secrets belong to the orchestrator hosts'
fencing configuration), so a spec can be logged, stored and printed safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated

from events.fields.fence import FenceAgent, OptionName, OptionValue
from events.fields.hv import (
    BootOrder,
    CpuType,
    DiskAio,
    DiskCache,
    KernelArgs,
    KernelPath,
    KvmFlag,
    MachineType,
    NicType,
    RebootBehavior,
    UsbMouse,
)
from events.fields.images import (
    ImageFormat,
    ImageKind,
    ImageSource,
    OsParams,
    Sha256,
    SshKeys,
    UserData,
)
from events.fields.names import (
    GroupNameField,
    InstanceNameField,
    NodeNameField,
    OsName,
    SshUser,
    Tag,
    Tags,
    VolumeGroupName,
)
from events.fields.network import (
    DEFAULT_MAC_PREFIX,
    EtcdUrl,
    HostAddress,
    IpAddress,
    Link,
    MacAddress,
    MacPrefix,
    NicMode,
    PrefixLen,
)
from events.fields.rules import Flag, count
from events.fields.sizes import Count, CpuCount, HostCpus, Port, Positive, SizeMiB
from events.ids import GroupName


class PowerState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class FenceSpec:
    """Which of the fence agents the orchestrator hosts allow (`fence_ipmilan`...)
    a node uses, and the non-secret options (key=value lines on the agent's
    stdin) the hosts let the desired state set. Secrets and the device's address
    are the hosts' (reactors.nodes.fence_config); events written before that may
    still carry a `secrets` field, which decoding drops."""

    agent: FenceAgent
    options: tuple[tuple[OptionName, OptionValue], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    name: NodeNameField
    address: HostAddress  # SSH address
    port: Port = 22
    replication_address: HostAddress | None = None  # DRBD address; defaults to `address`
    group: GroupNameField = GroupName("default")
    memory_mib: SizeMiB
    disk_mib: SizeMiB
    cpus: CpuCount
    host_memory_mib: SizeMiB = 1024  # reserved for the host itself (Ganeti: n_mem)
    # CPUs the host keeps for itself (Ganeti: cpu_n); they count in the vCPU ratio
    host_cpus: HostCpus = 1
    volume_group: VolumeGroupName = "corral"
    fence: FenceSpec | None = None
    tags: Tags = frozenset()
    drained: Flag = False
    offline: Flag = False
    ssh_user: SshUser = "corral"

    @property
    def drbd_address(self) -> str:
        return self.replication_address or self.address


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskSpec:
    size_mib: SizeMiB


@dataclass(frozen=True, slots=True, kw_only=True)
class NicSpec:
    mac: MacAddress | None = None
    link: Link = "br0"
    mode: NicMode = "bridged"
    ip: IpAddress | None = None
    # The guest's addressing, through its cloud-init seed's network-config: the
    # prefix length of `ip` (None: /24 for IPv4, /64 for IPv6), the default route
    # and the DNS servers.
    prefix_len: PrefixLen | None = None
    gateway: IpAddress | None = None
    nameservers: tuple[IpAddress, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HvParams:
    """Ganeti's kvm hvparams of the same names, as the node helper's `vm-start`
    takes them; "" is unset: the level below decides (instance over node group over
    cluster), and at the bottom qemu's default (KVM when the node has it)."""

    kvm_flag: KvmFlag = ""
    cpu_type: CpuType = ""
    machine_type: MachineType = ""
    boot_order: BootOrder = ""
    kernel_path: KernelPath = ""
    kernel_args: KernelArgs = ""
    initrd_path: KernelPath = ""
    disk_cache: DiskCache = ""
    disk_aio: DiskAio = ""
    usb_mouse: UsbMouse = ""
    reboot_behavior: RebootBehavior = ""
    nic_type: NicType = ""

    def over(self, base: HvParams) -> HvParams:
        """These parameters, each unset one taken from `base`."""
        if base == _NO_HV or self == base:
            return self
        if self == _NO_HV:
            return base
        return HvParams(**{f: getattr(self, f) or getattr(base, f) for f in HV_FIELDS})

    def conflicts(self) -> list[str]:
        """The rules that span these parameters (held by the effective ones: an
        instance's over its group's over the cluster's), each broken one said."""
        found = []
        if (self.kernel_args or self.initrd_path) and not self.kernel_path:
            found.append("kernel_args and initrd_path need kernel_path")
        if self.disk_aio == "native" and self.disk_cache not in ("", "none", "directsync"):
            found.append(
                f"disk_aio native needs disk_cache none or directsync, not {self.disk_cache}"
            )
        return found

    def given(self) -> dict[str, str]:
        """The parameters that are set (what `vm-start`'s `hv` carries)."""
        return {f: getattr(self, f) for f in HV_FIELDS if getattr(self, f)}


_NO_HV = HvParams()
HV_FIELDS: tuple[str, ...] = (
    "kvm_flag",
    "cpu_type",
    "machine_type",
    "boot_order",
    "kernel_path",
    "kernel_args",
    "initrd_path",
    "disk_cache",
    "disk_aio",
    "usb_mouse",
    "reboot_behavior",
    "nic_type",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageSpec:
    """An OS of the catalogue. Kind `image`: written raw onto an instance's first
    disk when it is created (or reinstalled), only if its sha256 is this one. Kind
    `ganeti-os`: a Ganeti OS definition installed on the nodes (name `NAME+VARIANT`
    or `NAME`), whose `create` script the node helper runs then, with `parameters`
    as its OSP_* variables (no source, no sha256)."""

    name: OsName
    source: ImageSource = ""  # /var/lib/corral/images/FILE on the nodes, or an http(s) URL
    sha256: Sha256 = ""
    format: ImageFormat = "raw"
    kind: ImageKind = "image"
    parameters: OsParams = ()

    @property
    def ganeti_os(self) -> bool:
        return self.kind == "ganeti-os"


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudInitSpec:
    """What an instance's cloud-init NoCloud seed carries besides its hostname and
    its NICs' network configuration."""

    ssh_keys: SshKeys = ()
    user_data: UserData = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSpec:
    name: InstanceNameField
    memory_mib: SizeMiB
    vcpus: CpuCount
    disks: Annotated[tuple[DiskSpec, ...], count(1, 16, "disks")]
    os: OsName = "none"
    nics: Annotated[tuple[NicSpec, ...], count(0, 8, "nics")] = ()
    tags: Tags = frozenset()
    power: PowerState = PowerState.RUNNING
    primary: NodeNameField | None = None  # optional pinning
    secondary: NodeNameField | None = None
    auto_balance: Flag = True
    hv: HvParams = HvParams()  # this instance's own hvparams (over its group's, the cluster's)
    # The catalogue entry `os` names, copied from the desired-state file's `images:`
    # (None: `os` names no catalogue image, the disk is left blank).
    image: ImageSpec | None = None
    cloud_init: CloudInitSpec | None = None  # None: no seed (no image either)

    @property
    def disk_mib(self) -> int:
        return sum(d.size_mib for d in self.disks)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSpec:
    name: GroupNameField
    tags: Tags = frozenset()
    hv: HvParams = HvParams()  # the group's hvparams (over the cluster's)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterPolicy:
    n_plus_one: Flag = True
    vcpu_ratio: Positive = 4.0
    # Instance tags with one of these prefixes are anti-affine: two primaries
    # sharing such a tag avoid one node (Ganeti's htools:iextags).
    exclusion_tag_prefixes: tuple[Tag, ...] = ()
    # Node tags with one of these prefixes name failure domains (rack:, psu:):
    # primary and secondary of one instance never share one.
    failure_domain_prefixes: tuple[Tag, ...] = ()
    # Whether a stopped instance's primary keeps its memory free (so it can be
    # started without a move): False, as htools do, counts only running
    # instances' memory as used when placing, balancing and checking N+1.
    reserve_stopped_memory: Flag = False
    suspect_timeout_s: Positive = 3.0
    lost_timeout_s: Positive = 8.0
    default_sync: Flag = False  # wait for initial DRBD sync
    # The watcher restarts a VM that stopped by itself at most `restart_limit` times
    # on one node within `restart_window_s`, waiting restart_backoff_s, then twice
    # that, and so on (at most 60 s), after each start; then it is ERROR_down.
    restart_limit: Count = 5
    restart_window_s: Positive = 600.0
    restart_backoff_s: Positive = 2.0
    extra: tuple[tuple[str, str], ...] = field(default=())
    hv: HvParams = HvParams()  # the cluster's hvparams (Ganeti: gnt-cluster modify -H kvm:...)
    # The first three octets of the MACs corral generates (Ganeti's cluster
    # mac_prefix); a MAC once recorded keeps its prefix when this changes.
    mac_prefix: MacPrefix = DEFAULT_MAC_PREFIX


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredCluster:
    """Everything operators declared: the desired half of ClusterState, and what a
    desired-state file loads into. Mappings are keyed by name; treat them as
    read-only (they are replaced, never mutated, by the fold)."""

    name: str
    policy: ClusterPolicy = ClusterPolicy()
    groups: dict[GroupNameField, GroupSpec] = field(default_factory=dict)
    nodes: dict[NodeNameField, NodeSpec] = field(default_factory=dict)
    instances: dict[InstanceNameField, InstanceSpec] = field(default_factory=dict)
    etcd_endpoints: tuple[EtcdUrl, ...] = ()
    # A desired-state file's image catalogue, by name (the live state keeps the last
    # applied file's in DesiredStateApplied.images, not here).
    images: dict[OsName, ImageSpec] = field(default_factory=dict)
