"""The event vocabulary: every cluster action, decision, action result and
observation is one of these frozen, versioned dataclasses.

Pure: no I/O, no logging. Writers construct them with keyword arguments, the
common id, time and actor from `stamp(...)`; nothing mutates them.

Every event carries: id, type (class attribute TYPE), schema version (VERSION),
time (unix seconds), actor (user, API client or reactor name), causation id (the
event it reacts to), correlation id (the job or operation it belongs to), reason.
`objects()` names the keys the event concerns (`instance/web1`, `node/node1`,
`job/...`): the store indexes by them and uses them for per-object versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, TypedDict

from events.ids import EventId, InstanceName, JobId, NodeName, new_event_id
from events.specs import ClusterPolicy, GroupSpec, ImageSpec, InstanceSpec, NodeSpec, PowerState


def instance_key(name: str) -> str:
    return f"instance/{name}"


def node_key(name: str) -> str:
    return f"node/{name}"


def job_key(job_id: str) -> str:
    return f"job/{job_id}"


CLUSTER_KEY = "cluster"


class Stamp(TypedDict):
    """What every event takes from whoever writes it, now: `NodeFenced(**stamp, ...)`."""

    id: EventId
    time: float
    actor: str


def stamp(*, actor: str, time: float) -> Stamp:
    """A fresh id with the writer's name and clock."""
    return Stamp(id=new_event_id(), time=time, actor=actor)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    TYPE: ClassVar[str] = "event"
    VERSION: ClassVar[int] = 1

    id: EventId
    time: float
    actor: str
    reason: str = ""
    causation_id: EventId | None = None
    correlation_id: str | None = None

    def objects(self) -> tuple[str, ...]:
        return (CLUSTER_KEY,)


# --------------------------------------------------------------------------- desired


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySet(Event):
    TYPE: ClassVar[str] = "policy.set"
    cluster_name: str
    policy: ClusterPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSet(Event):
    """A node group as the desired-state file declares it (tags, hvparams)."""

    TYPE: ClassVar[str] = "group.set"
    spec: GroupSpec

    def objects(self) -> tuple[str, ...]:
        return (f"group/{self.spec.name}",)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDeclared(Event):
    """A node added (or re-declared with changes) to desired state."""

    TYPE: ClassVar[str] = "node.declared"
    spec: NodeSpec

    def objects(self) -> tuple[str, ...]:
        return (node_key(self.spec.name),)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeUpdated(Event):
    TYPE: ClassVar[str] = "node.updated"
    spec: NodeSpec

    def objects(self) -> tuple[str, ...]:
        return (node_key(self.spec.name),)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRemoved(Event):
    TYPE: ClassVar[str] = "node.removed"
    node: NodeName

    def objects(self) -> tuple[str, ...]:
        return (node_key(self.node),)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFlagsSet(Event):
    """Imperative drain/undrain/offline/online (`corral node drain ...`)."""

    TYPE: ClassVar[str] = "node.flags_set"
    node: NodeName
    drained: bool | None = None
    offline: bool | None = None

    def objects(self) -> tuple[str, ...]:
        return (node_key(self.node),)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceDeclared(Event):
    TYPE: ClassVar[str] = "instance.declared"
    spec: InstanceSpec

    def objects(self) -> tuple[str, ...]:
        return (instance_key(self.spec.name),)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceUpdated(Event):
    TYPE: ClassVar[str] = "instance.updated"
    spec: InstanceSpec

    def objects(self) -> tuple[str, ...]:
        return (instance_key(self.spec.name),)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRemoved(Event):
    TYPE: ClassVar[str] = "instance.removed"
    instance: InstanceName

    def objects(self) -> tuple[str, ...]:
        return (instance_key(self.instance),)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRenamed(Event):
    """An instance now goes by `new_name` (`corral instance rename`): its spec,
    placement and restart record move to the new name. Appended by the rename job
    once the nodes' LVs and DRBD resources carry the new name; the old name's key
    keeps its history."""

    TYPE: ClassVar[str] = "instance.renamed"
    instance: InstanceName
    new_name: InstanceName

    def objects(self) -> tuple[str, ...]:
        return (instance_key(self.instance), instance_key(self.new_name))


@dataclass(frozen=True, slots=True, kw_only=True)
class InstancePowerSet(Event):
    """Imperative start/stop (`corral instance stop web1`): changes desired power."""

    TYPE: ClassVar[str] = "instance.power_set"
    instance: InstanceName
    power: PowerState

    def objects(self) -> tuple[str, ...]:
        return (instance_key(self.instance),)


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredStateApplied(Event):
    """A desired-state file was applied: which files, their digest, who, why."""

    TYPE: ClassVar[str] = "desired.applied"
    digest: str
    author: str
    message: str = ""
    files: tuple[str, ...] = ()
    changes: int = 0
    images: tuple[ImageSpec, ...] = ()  # the file's image catalogue (for reinstall --os)


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskPlacement:
    """One DRBD-mirrored disk: its index, size, DRBD minor (same on both nodes) and
    TCP port (same on both nodes)."""

    index: int
    size_mib: int
    minor: int
    port: int


class PlacementKind(StrEnum):
    INITIAL = "initial"
    MIGRATE = "migrate"
    FAILOVER = "failover"
    REPLACE_SECONDARY = "replace-secondary"
    HEAL = "heal"


@dataclass(frozen=True, slots=True, kw_only=True)
class InstancePlaced(Event):
    """Where an instance's primary and secondary are (decided once, then only changed
    by another InstancePlaced: migrate, failover, replace-secondary, heal)."""

    TYPE: ClassVar[str] = "instance.placed"
    instance: InstanceName
    primary: NodeName
    secondary: NodeName
    disks: tuple[DiskPlacement, ...]
    kind: PlacementKind = PlacementKind.INITIAL
    score: float | None = None
    # A node whose copy this placement supersedes: it was fenced while primary, so
    # when it returns its DRBD data may be discarded (safety rule 3). None otherwise.
    superseded: NodeName | None = None

    def objects(self) -> tuple[str, ...]:
        return (instance_key(self.instance),)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementRefused(Event):
    """The allocator could not place an instance; `reason` says which resource on
    which node."""

    TYPE: ClassVar[str] = "instance.placement_refused"
    instance: InstanceName
    failures: tuple[tuple[str, int], ...] = ()  # (reason, node count)

    def objects(self) -> tuple[str, ...]:
        return (instance_key(self.instance),)


# --------------------------------------------------------------------------- jobs


class JobKind(StrEnum):
    """Operations a job can carry (`JobSubmitted.kind`)."""

    INSTANCE_START = "instance.start"
    INSTANCE_STOP = "instance.stop"
    INSTANCE_REBOOT = "instance.reboot"
    INSTANCE_MIGRATE = "instance.migrate"
    INSTANCE_FAILOVER = "instance.failover"
    INSTANCE_REPLACE_DISKS = "instance.replace-disks"
    INSTANCE_GROW_DISK = "instance.grow-disk"
    INSTANCE_ACTIVATE_DISKS = "instance.activate-disks"
    INSTANCE_DEACTIVATE_DISKS = "instance.deactivate-disks"
    INSTANCE_CREATE = "instance.create"
    INSTANCE_REMOVE = "instance.remove"
    INSTANCE_MODIFY = "instance.modify"
    INSTANCE_RENAME = "instance.rename"
    INSTANCE_HOTPLUG = "instance.hotplug"
    INSTANCE_REMOVE_DISK = "instance.remove-disk"
    INSTANCE_REINSTALL = "instance.reinstall"
    NODE_EVACUATE = "node.evacuate"
    NODE_MIGRATE = "node.migrate"
    NODE_FAILOVER = "node.failover"
    BALANCE = "cluster.balance"


JOB_FINAL_STATUSES = frozenset({"success", "error", "canceled"})


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    CANCELING = "canceling"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSubmitted(Event):
    """An operation (migrate, failover, replace-disks, evacuate, grow-disk...) as a job.
    `targets` are the object keys it locks (one job per instance at a time)."""

    TYPE: ClassVar[str] = "job.submitted"
    job_id: JobId
    kind: str
    targets: tuple[str, ...]
    params: tuple[tuple[str, str], ...] = ()

    def objects(self) -> tuple[str, ...]:
        return (job_key(self.job_id), *self.targets)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobUpdated(Event):
    """Status change or a log line of a job."""

    TYPE: ClassVar[str] = "job.updated"
    job_id: JobId
    status: JobStatus | None = None
    log: str = ""
    error: str = ""

    def objects(self) -> tuple[str, ...]:
        return (job_key(self.job_id),)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobCancelRequested(Event):
    TYPE: ClassVar[str] = "job.cancel_requested"
    job_id: JobId

    def objects(self) -> tuple[str, ...]:
        return (job_key(self.job_id),)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted(Event):
    TYPE: ClassVar[str] = "step.started"
    key: str  # the object being reconciled, e.g. instance/web1
    step: str  # e.g. "create-lv", "drbd-up", "start-vm"
    node: NodeName | None = None
    command: str = ""  # summary, never secrets

    def objects(self) -> tuple[str, ...]:
        return (self.key,)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSucceeded(Event):
    TYPE: ClassVar[str] = "step.succeeded"
    key: str
    step: str
    node: NodeName | None = None
    command: str = ""
    duration_s: float = 0.0

    def objects(self) -> tuple[str, ...]:
        return (self.key,)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFailed(Event):
    TYPE: ClassVar[str] = "step.failed"
    key: str
    step: str
    node: NodeName | None = None
    command: str = ""
    duration_s: float = 0.0
    error: str = ""

    def objects(self) -> tuple[str, ...]:
        return (self.key,)


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFacts:
    hostname: str
    cpus: int
    memory_total_mib: int
    memory_free_mib: int
    boot_id: str
    vg_size_mib: int = 0
    vg_free_mib: int = 0
    drbd_version: str = ""  # the loaded module's, from /proc/drbd ("8.4.11"); "" if none
    bridges: tuple[str, ...] | None = None  # None: the node's helper does not report them


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeObs:
    vg: str
    name: str
    size_mib: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DrbdPeerObs:
    peer: str  # peer host name as in the resource file
    connection: str  # Connected, Connecting, StandAlone, ...
    peer_role: str  # Primary, Secondary, Unknown
    peer_disk: str  # UpToDate, Inconsistent, Outdated, DUnknown, ...
    replication: str  # Established, SyncSource, SyncTarget, Off, ...
    percent_in_sync: float = 100.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DrbdResourceObs:
    name: str
    role: str  # Primary, Secondary
    disk: str  # UpToDate, Inconsistent, Diskless, ...
    minor: int | None = None
    peers: tuple[DrbdPeerObs, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class VmObs:
    name: str
    pid: int | None
    status: str  # QMP status: running, paused, inmigrate, postmigrate, shutdown...
    memory_mib: int = 0
    vcpus: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeObserved(Event):
    """What a probe read off a node, recorded only when it changed. Fields left None
    were not part of this probe (the previous observation stands)."""

    TYPE: ClassVar[str] = "node.observed"
    node: NodeName
    facts: NodeFacts | None = None
    volumes: tuple[VolumeObs, ...] | None = None
    drbd: tuple[DrbdResourceObs, ...] | None = None
    vms: tuple[VmObs, ...] | None = None

    def objects(self) -> tuple[str, ...]:
        return (node_key(self.node),)


class NodeHealth(StrEnum):
    UNKNOWN = "unknown"
    ONLINE = "online"
    SUSPECT = "suspect"  # missed probes, not yet lost
    PARTITIONED = "partitioned"  # we cannot reach it, its DRBD peers still see it
    LOST = "lost"  # unreachable and its peers lost it too: fencing begins
    FENCED = "fenced"  # confirmed powered off (agent or manual override)

    @property
    def down(self) -> bool:
        """Lost or fenced: the node runs nothing of ours any more."""
        return self in (NodeHealth.LOST, NodeHealth.FENCED)

    @property
    def healthy(self) -> bool:
        """May take new work: neither suspected, partitioned, lost nor fenced."""
        return self in (NodeHealth.ONLINE, NodeHealth.UNKNOWN)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeHealthChanged(Event):
    """Health transitions: unreachable/suspect, partitioned, lost, back online."""

    TYPE: ClassVar[str] = "node.health"
    node: NodeName
    health: NodeHealth
    detail: str = ""

    def objects(self) -> tuple[str, ...]:
        return (node_key(self.node),)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFenced(Event):
    """The node is confirmed off: by its fence agent, or vouched for by a person."""

    TYPE: ClassVar[str] = "node.fenced"
    node: NodeName
    method: str  # "agent" or "manual"
    agent: str = ""
    confirmed_by: str = ""

    def objects(self) -> tuple[str, ...]:
        return (node_key(self.node),)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFenceFailed(Event):
    TYPE: ClassVar[str] = "node.fence_failed"
    node: NodeName
    attempt: int
    error: str

    def objects(self) -> tuple[str, ...]:
        return (node_key(self.node),)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecovered(Event):
    """A fenced or lost node answers again (new boot id); it rejoins as a normal node
    once its stale state is cleaned up."""

    TYPE: ClassVar[str] = "node.recovered"
    node: NodeName
    boot_id: str = ""

    def objects(self) -> tuple[str, ...]:
        return (node_key(self.node),)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCheckLine:
    """One prerequisite of a node, as `corral node add/check` judged it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeChecked(Event):
    """`corral node add` or `corral node check` ran the prerequisite checks on a
    node: every line, the host key it pinned (OpenSSH public key and SHA256
    fingerprint) and the DRBD module version it found. Recorded for the audit; a
    node add whose checks failed records nothing."""

    TYPE: ClassVar[str] = "node.checked"
    node: NodeName
    address: str
    ok: bool
    checks: tuple[NodeCheckLine, ...]
    host_key: str = ""
    fingerprint: str = ""
    drbd_version: str = ""
    installed: bool = False  # --install ran on this pass

    def objects(self) -> tuple[str, ...]:
        return (node_key(self.node),)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRaised(Event):
    TYPE: ClassVar[str] = "alert.raised"
    alert: str  # stable key, e.g. "partitioned:node3"
    severity: str  # "warning" or "critical"
    message: str
    subject: str = CLUSTER_KEY

    def objects(self) -> tuple[str, ...]:
        return (self.subject,)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertCleared(Event):
    TYPE: ClassVar[str] = "alert.cleared"
    alert: str
    subject: str = CLUSTER_KEY

    def objects(self) -> tuple[str, ...]:
        return (self.subject,)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventUndecodable(Event):
    """Stands in for a stored event that does not decode or breaks a field rule (never
    stored itself): the fold raises an alert naming it and counts the versions of the
    objects it names, so nothing waits for it and nothing acts on its content."""

    TYPE: ClassVar[str] = "event.undecodable"
    key: str  # where it is stored
    stored_type: str  # the type it claims, "" when unreadable
    why: str
    keys: tuple[str, ...] = ()  # the objects it names, as far as they can be read

    def objects(self) -> tuple[str, ...]:
        return self.keys


# --------------------------------------------------------------------------- OS installs


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceReinstallRequested(Event):
    """A person asked for the instance's OS to be written again (its disk's data is
    lost): the VM is stopped, the image written, a new seed made, the VM started.
    The instance's spec (with the image) is recorded before this event."""

    TYPE: ClassVar[str] = "instance.reinstall_requested"
    instance: InstanceName
    image: str

    def objects(self) -> tuple[str, ...]:
        return (instance_key(self.instance),)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceInstalled(Event):
    """The OS image was written onto the instance's first disk on `node`."""

    TYPE: ClassVar[str] = "instance.installed"
    instance: InstanceName
    node: NodeName
    image: str
    sha256: str

    def objects(self) -> tuple[str, ...]:
        return (instance_key(self.instance),)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceInstallFailed(Event):
    """The OS image could not be written for a reason trying again does not fix
    (missing on the node, another checksum): nothing was written; the instance
    waits for a fixed catalogue entry and a reinstall."""

    TYPE: ClassVar[str] = "instance.install_failed"
    instance: InstanceName
    node: NodeName
    image: str
    error: str

    def objects(self) -> tuple[str, ...]:
        return (instance_key(self.instance),)


ALL_EVENT_TYPES: tuple[type[Event], ...] = (
    PolicySet,
    GroupSet,
    NodeDeclared,
    NodeUpdated,
    NodeRemoved,
    NodeFlagsSet,
    InstanceDeclared,
    InstanceUpdated,
    InstanceRemoved,
    InstanceRenamed,
    InstancePowerSet,
    DesiredStateApplied,
    InstancePlaced,
    PlacementRefused,
    JobSubmitted,
    JobUpdated,
    JobCancelRequested,
    StepStarted,
    StepSucceeded,
    StepFailed,
    NodeObserved,
    NodeHealthChanged,
    NodeFenced,
    NodeFenceFailed,
    NodeRecovered,
    NodeChecked,
    AlertRaised,
    AlertCleared,
    InstanceReinstallRequested,
    InstanceInstalled,
    InstanceInstallFailed,
)

EVENT_TYPES: dict[str, type[Event]] = {cls.TYPE: cls for cls in ALL_EVENT_TYPES}
