"""ClusterState: the immutable picture folded from the event log. Desired (what
operators declared), decided (placements made once) and observed (what nodes
reported) are kept apart, with per-object versions for optimistic concurrency.

Pure: no I/O, no logging. Mappings are never mutated after a fold returns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from events.ids import InstanceName, JobId, NodeName
from events.model import (
    DesiredStateApplied,
    DiskPlacement,
    DrbdResourceObs,
    JobStatus,
    NodeFacts,
    NodeHealth,
    PlacementKind,
    VmObs,
    VolumeObs,
)
from events.specs import DesiredCluster


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    primary: NodeName
    secondary: NodeName
    disks: tuple[DiskPlacement, ...]
    kind: PlacementKind
    revision: int  # etcd revision of the InstancePlaced event that decided it
    event_id: str = ""
    superseded: NodeName | None = None  # see InstancePlaced.superseded


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeObservation:
    facts: NodeFacts | None = None
    volumes: tuple[VolumeObs, ...] = ()
    drbd: tuple[DrbdResourceObs, ...] = ()
    vms: tuple[VmObs, ...] = ()
    health: NodeHealth = NodeHealth.UNKNOWN
    health_detail: str = ""
    observed_at: float = 0.0  # time of the last NodeObserved
    health_since: float = 0.0
    fenced_at: float | None = None  # set by NodeFenced, cleared by NodeRecovered
    fenced_by: str = ""
    fence_event_id: str = ""  # the NodeFenced event: the cause of the failovers it allows
    fence_failures: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class JobState:
    job_id: JobId
    kind: str
    targets: tuple[str, ...]
    params: tuple[tuple[str, str], ...]
    status: JobStatus
    actor: str
    reason: str
    submitted_at: float
    started_at: float | None = None
    ended_at: float | None = None
    log: tuple[tuple[float, str], ...] = ()
    error: str = ""
    cancel_requested: bool = False
    revision: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    alert: str
    severity: str
    message: str
    subject: str
    raised_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    """The last action on an object (for status output and retry backoff)."""

    step: str
    node: NodeName | None
    ok: bool | None  # None while running
    error: str
    at: float
    failures_in_a_row: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallState:
    """An OS install of one instance: asked for by its declaration (with an image)
    or a reinstall, done once the image is written."""

    request_id: str  # the asking event's id: the guest's cloud-init instance-id
    image: str
    done: bool = False
    error: str = ""  # why it failed, when trying again cannot help
    reinstall: bool = False  # asked for by a reinstall (a definition's INSTANCE_REINSTALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterState:
    revision: int = 0  # etcd revision of the last folded event
    # Events of one append share a revision; these are the ids already folded at
    # `revision`, so a replay of that revision applies only what is new.
    revision_ids: frozenset[str] = frozenset()
    revision_keys: frozenset[str] = frozenset()  # object keys versioned at `revision`
    event_count: int = 0
    desired: DesiredCluster = field(default_factory=lambda: DesiredCluster(name=""))
    placements: dict[InstanceName, Placement] = field(default_factory=dict)
    refusals: dict[InstanceName, str] = field(default_factory=dict)
    observed: dict[NodeName, NodeObservation] = field(default_factory=dict)
    jobs: dict[JobId, JobState] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)
    last_steps: dict[str, StepRecord] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # object key -> events seen
    last_applied: DesiredStateApplied | None = None
    # Recent successful VM starts per instance (time, node), newest last, for the
    # watcher's bounded restarts; cleared when a person asks for a start.
    vm_starts: dict[InstanceName, tuple[tuple[float, NodeName], ...]] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # keys of events the fold could not use, with why
    installs: dict[InstanceName, InstallState] = field(default_factory=dict)

    def node_down(self, node: NodeName) -> bool:
        """The node is observed lost or fenced (never seen is not down)."""
        obs = self.observed.get(node)
        return obs is not None and obs.health.down
