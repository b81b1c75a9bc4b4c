"""What a plan is made of: the kinds of node step, each step with what carrying it
out needs (a DRBD resource's configuration, the instance's spec with the hvparams
of the node it starts on), and the plan of one instance (its steps, what it waits
for, its alerts). Built by `reactors.plans.instance` and the jobs, carried out by
`reactors.nodes`.

Pure: no I/O, no logging, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from events.ids import InstanceName, NodeName
from events.model import DiskPlacement
from events.specs import InstanceSpec, NodeSpec
from events.state import ClusterState, Placement
from reactors.naming import disk_name, parse_disk_name
from reactors.plans.queries import drbd_on


class StepKind(StrEnum):
    CREATE_DISK = "create-disk"  # lvcreate + resource file + create-md
    DRBD_UP = "drbd-up"  # (re)write resource file + drbdadm adjust
    DRBD_DISCARD = "drbd-discard"  # rejoin as sync target, dropping stale data (rule 3)
    DRBD_INITIAL_PRIMARY = "drbd-initial-primary"  # fresh pair: primary --force
    DRBD_PRIMARY = "drbd-primary"
    DRBD_SECONDARY = "drbd-secondary"
    GROW_DISK = "grow-disk"  # lvextend on both nodes, drbdadm resize on the primary
    START_VM = "start-vm"
    STOP_VM = "stop-vm"
    REMOVE_DISK = "remove-disk"  # drbdadm down + rm resource file + lvremove
    # Live migration only (driven by reactors.jobs, never planned here):
    DRBD_DUAL_PRIMARY = "drbd-dual-primary"  # resource file with allow-two-primaries + adjust
    DRBD_SINGLE_PRIMARY = "drbd-single-primary"  # back to one primary + adjust
    START_VM_INCOMING = "start-vm-incoming"  # qemu -incoming tcp:ADDR:PORT on the target
    MIGRATE_VM = "migrate-vm"  # QMP migrate on the source, until completed or failed
    # Rename only (driven by reactors.jobs, never planned here):
    DRBD_DOWN = "drbd-down"  # drbdadm down + rm resource file, the LV kept
    RENAME_DISK = "rename-disk"  # lvrename from `renamed_from` + resource file + adjust
    # Hotplug (driven by reactors.jobs): one NIC of the spec into the running VM.
    HOTPLUG_NIC = "hotplug-nic"
    HOTPLUG_DISK = "hotplug-disk"  # `disk` (Primary here) into the running VM, `spec.hv`'s cache
    INSTALL_OS = "install-os"  # the image onto the first disk (Primary here); see plans.install
    RENAME_OS = "rename-os"  # a Ganeti OS definition's rename script (disks Primary here)


@dataclass(frozen=True, slots=True, kw_only=True)
class DrbdPeerConfig:
    node: NodeName
    address: str
    node_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskConfig:
    """Everything needed to write one DRBD resource and its backing LV."""

    resource: str
    index: int
    size_mib: int
    minor: int
    port: int
    volume_group: str
    hosts: tuple[DrbdPeerConfig, ...]  # both nodes, primary first


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    kind: StepKind
    node: NodeName
    instance: InstanceName
    disk: DiskConfig | None = None
    spec: InstanceSpec | None = None  # for START_VM
    disks: tuple[DiskConfig, ...] = ()  # for START_VM: the disks, in order
    grow_peer: NodeName | None = None  # for GROW_DISK: the secondary to extend too
    migrate_address: str = ""  # for START_VM_INCOMING / MIGRATE_VM
    migrate_port: int = 0
    renamed_from: str = ""  # for RENAME_DISK: the LV's old name
    nic_index: int = -1  # for HOTPLUG_NIC: which of `spec.nics`
    note: str = ""
    seed_id: str = ""  # START_VM*: the cloud-init seed's instance-id ("" = no seed)
    reinstall: bool = False  # INSTALL_OS of a Ganeti OS definition: INSTANCE_REINSTALL=1

    @property
    def summary(self) -> str:
        what = self.disk.resource if self.disk else self.instance
        return f"{self.kind.value} {what} on {self.node}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class InstancePlan:
    instance: InstanceName
    steps: tuple[Step, ...] = ()
    waiting: tuple[str, ...] = ()  # why some work cannot proceed yet
    alerts: tuple[tuple[str, str], ...] = ()  # (alert key, message)
    converged: bool = False
    restart_required: bool = False
    degraded: bool = False
    error_down: bool = False  # crashed too often: not restarted until a person asks
    notes: tuple[str, ...] = field(default=())


def effective_hv(*, state: ClusterState, spec: InstanceSpec, node: NodeName) -> InstanceSpec:
    """`spec` with the hvparams a start on `node` uses: its own over the node's
    group's over the cluster's (Ganeti's fill order)."""
    node_spec = state.desired.nodes.get(node)
    group = state.desired.groups.get(node_spec.group) if node_spec else None
    base = state.desired.policy.hv
    if group is not None:
        base = group.hv.over(base)
    hv = spec.hv.over(base)
    return spec if hv == spec.hv else replace(spec, hv=hv)


def disk_configs(
    *, state: ClusterState, instance: InstanceName, placement: Placement
) -> tuple[DiskConfig, ...]:
    spec = state.desired.instances.get(instance)
    configs = []
    for disk in placement.disks:
        size = disk.size_mib
        if spec is not None and disk.index < len(spec.disks):
            size = max(size, spec.disks[disk.index].size_mib)
        configs.append(
            _disk_config(state=state, instance=instance, placement=placement, disk=disk, size=size)
        )
    return tuple(configs)


def _disk_config(
    *,
    state: ClusterState,
    instance: InstanceName,
    placement: Placement,
    disk: DiskPlacement,
    size: int,
) -> DiskConfig:
    hosts = []
    for node_id, node in enumerate((placement.primary, placement.secondary)):
        spec: NodeSpec | None = state.desired.nodes.get(node)
        address = spec.drbd_address if spec else "0.0.0.0"
        hosts.append(DrbdPeerConfig(node=node, address=address, node_id=node_id))
    primary_spec = state.desired.nodes.get(placement.primary)
    vg = primary_spec.volume_group if primary_spec else "corral"
    # Node ids must not depend on which side is primary (they are written into the
    # DRBD metadata): order them by name so a failover keeps them stable.
    hosts.sort(key=lambda h: h.node)
    hosts = [DrbdPeerConfig(node=h.node, address=h.address, node_id=i) for i, h in enumerate(hosts)]
    return DiskConfig(
        resource=disk_name(instance, disk.index),
        index=disk.index,
        size_mib=size,
        minor=disk.minor,
        port=disk.port,
        volume_group=vg,
        hosts=tuple(hosts),
    )


def bare_disk(resource: str, state: ClusterState, node: NodeName) -> DiskConfig:
    """What removing `resource` from `node` needs (its VG and minor as the node last
    reported them), for a disk no placement holds any more."""
    parsed = parse_disk_name(resource)
    spec = state.desired.nodes.get(node)
    obs = state.observed.get(node)
    res = drbd_on(obs, resource)
    vg = spec.volume_group if spec else "corral"
    for vol in obs.volumes if obs else ():
        if vol.name == resource:
            vg = vol.vg
    return DiskConfig(
        resource=resource,
        index=parsed[1] if parsed else 0,
        size_mib=0,
        minor=res.minor if res and res.minor is not None else -1,
        port=0,
        volume_group=vg,
        hosts=(),
    )
