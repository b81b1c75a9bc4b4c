"""`/metrics` with prometheus_client: counters and histograms fed as things happen (API
requests, auth failures and refusals, SSH node commands, etcd requests, reconcile
passes, the event loop's lateness), the standard process, platform and GC
metrics, the control plane as this process sees it (who leads, the term, since
when, how many stand by, stalls of its own loop), and, at scrape time, gauges
derived from the folded ClusterState (node capacity and usage, node health, instances
by status, DRBD resources by connection and disk state, sync percent, jobs by kind and
status, job durations, alerts, event-log revision, the last node loss).

Each `ApiMetrics` has its own registry (several servers in one test process never
share counters). Must not: touch etcd or nodes, or keep cluster state of its own
(everything cluster-related is recomputed from the state passed in).
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from events.model import JobStatus, NodeHealth
from events.state import ClusterState
from orchestrator.cluster_report import instance_row, node_rows
from orchestrator.heal_timeline import HealTimeline

# Text format 0.0.4: what the names here need, and what scrapers have been reading.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# The `*_created` series are one more line per labelled child that no dashboard
# of ours reads.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass
class SshCommandMetrics:
    """What the SSH layer reports per node command: `observe(node=..., command=<the
    node helper's verb: probe, drbdadm, vm-start, batch, ...>, duration_s=..., ok=...)`
    after each command (ok=False for timeouts and transport errors)."""

    latency: Histogram
    errors: Counter

    @classmethod
    def on(cls, registry: CollectorRegistry) -> SshCommandMetrics:
        return cls(
            latency=Histogram(
                "corral_ssh_command_duration_seconds",
                "Node commands run over SSH, by node and command, and how long they took.",
                ("node", "command"),
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            errors=Counter(
                "corral_ssh_command_errors",
                "Node commands over SSH that timed out or lost their connection.",
                ("node", "command"),
                registry=registry,
            ),
        )

    def observe(self, *, node: str, command: str, duration_s: float, ok: bool) -> None:
        self.latency.labels(node=node, command=command).observe(duration_s)
        if not ok:
            self.errors.labels(node=node, command=command).inc()


LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlView:
    """The control plane as this process sees it, when scraped."""

    member: str  # this orchestrator's id
    leading: bool
    term: int  # the current leader's term (0: none known)
    leader: str  # the current leader's id ("" : none known)
    since: float  # wall time the leader's term began
    standbys: int  # registered orchestrators other than the leader
    stalls: int  # stalls of this process's event loop so far


@dataclass(frozen=True)
class ControlCollector:
    view: Callable[[], ControlView]

    def collect(self) -> Iterator[Metric]:
        v = self.view()
        yield _gauge(
            "corral_leader",
            "1 if this orchestrator leads (runs the reactors), 0 on a standby.",
            ("member",),
            [((v.member,), 1.0 if v.leading else 0.0)],
        )
        yield _gauge(
            "corral_leader_term",
            "The leader's term (the leader key's create revision), as last read.",
            ("leader",),
            [((v.leader,), float(v.term))] if v.term else [],
        )
        yield _gauge(
            "corral_leader_since_timestamp_seconds",
            "When the leader's term began (unix time).",
            ("leader",),
            [((v.leader,), v.since)] if v.term else [],
        )
        yield _gauge(
            "corral_standby_orchestrators",
            "Orchestrators registered besides the leader (ready to take over).",
            (),
            [((), float(v.standbys))],
        )
        stalls = CounterMetricFamily(
            "corral_loop_stalls",
            "Times this process's event loop ran late by more than the stall threshold.",
        )
        stalls.add_metric([], float(v.stalls))
        yield stalls


@dataclass
class ApiMetrics:
    """The process-wide counters and histograms `/metrics` exposes next to the
    gauges derived from the state."""

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    node_loss: HealTimeline = field(default_factory=HealTimeline)
    # The control plane's state at scrape time (`corral serve` sets it).
    control: Callable[[], ControlView] | None = None

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "corral_api_requests",
            "HTTP API requests by method, route and status code.",
            ("method", "route", "status"),
            registry=r,
        )
        self.request_seconds = Histogram(
            "corral_api_request_duration_seconds",
            "HTTP API request handling time by route (streams excluded).",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter(
            "corral_api_auth_failures",
            "Requests refused with 401, by reason (missing, malformed, unknown token).",
            ("reason",),
            registry=r,
        )
        self.forbidden = Counter(
            "corral_api_forbidden",
            "Requests refused with 403 (role or scope does not allow it).",
            ("principal",),
            registry=r,
        )
        self.ssh = SshCommandMetrics.on(r)
        self.etcd_seconds = Histogram(
            "corral_etcd_request_duration_seconds",
            "etcd requests of the event store (append, get), by operation.",
            ("operation",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "corral_reconcile_duration_seconds",
            "One reconcile pass of one instance: plan, run its steps, re-probe.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "corral_loop_lag_seconds",
            "How late the orchestrator's event loop woke its watch (sampled every 50 ms).",
            buckets=LAG_BUCKETS,
            registry=r,
        )

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when absent), for tests and checks."""
        return self.registry.get_sample_value(name, labels) or 0.0


@dataclass(frozen=True)
class _Scrape:
    """One scrape: the process registry, then the state's gauges."""

    parts: tuple[Collector, ...]

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


def render_metrics(state: ClusterState, metrics: ApiMetrics, *, now: float) -> str:
    parts: list[Collector] = [
        StateCollector(state=state, now=now, node_loss=metrics.node_loss),
        metrics.registry,
    ]
    if metrics.control is not None:
        parts.append(ControlCollector(metrics.control))
    scrape = _Scrape(tuple(parts))
    return generate_latest(scrape).decode()


def _gauge(
    name: str,
    help_text: str,
    labels: tuple[str, ...],
    samples: Iterable[tuple[tuple[str, ...], float]],
) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, help_text, labels=labels)
    for values, value in samples:
        g.add_metric(list(values), value)
    return g


_PER_NODE = (
    ("memory_mib", "corral_node_memory_mib", "Memory instances may use on the node (MiB)."),
    ("memory_used_mib", "corral_node_memory_used_mib", "Memory used by primaries (MiB)."),
    ("n1_reserve_mib", "corral_node_n1_reserve_mib", "Memory kept for N+1 failover (MiB)."),
    ("disk_mib", "corral_node_disk_mib", "Disk of the node's volume group (MiB)."),
    ("disk_used_mib", "corral_node_disk_used_mib", "Disk used by instance volumes (MiB)."),
    ("primaries", "corral_node_primaries", "Instances whose primary is the node."),
    ("secondaries", "corral_node_secondaries", "Instances whose secondary is the node."),
    ("vms_running", "corral_node_vms_running", "VM processes running on the node."),
)
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELING)


@dataclass(frozen=True, kw_only=True)
class StateCollector:
    """The gauges (and the job-duration histogram) of one folded state, computed when
    scraped."""

    state: ClusterState
    now: float
    node_loss: HealTimeline

    def collect(self) -> Iterator[Metric]:
        yield from self._log()
        yield from self._nodes()
        yield from self._instances()
        yield from self._drbd()
        yield from self._jobs()
        yield self._alerts()
        yield self._node_loss()

    def _log(self) -> Iterator[Metric]:
        yield _gauge(
            "corral_event_log_revision",
            "etcd revision of the last event folded into the orchestrator's state.",
            (),
            [((), self.state.revision)],
        )
        yield _gauge("corral_events", "Events folded so far.", (), [((), self.state.event_count)])

    def _nodes(self) -> Iterator[Metric]:
        rows = node_rows(self.state)
        for attr, name, help_text in _PER_NODE:
            yield _gauge(name, help_text, ("node",), [((r.name,), getattr(r, attr)) for r in rows])
        yield _gauge(
            "corral_node_n1_ok",
            "1 when the node could absorb the failover of its peers (N+1).",
            ("node",),
            [((r.name,), 1 if r.n1_ok else 0) for r in rows],
        )
        yield _gauge(
            "corral_node_health",
            "1 for the node's current health, 0 for the others.",
            ("node", "health"),
            [
                ((r.name, h.value), 1 if r.health == h.value else 0)
                for r in rows
                for h in NodeHealth
            ],
        )
        yield _gauge(
            "corral_node_flag",
            "1 when the node has the flag (drained, offline).",
            ("node", "flag"),
            [((r.name, f), 1 if f in r.flags else 0) for r in rows for f in ("drained", "offline")],
        )

    def _instances(self) -> Iterator[Metric]:
        st = self.state
        rows = [instance_row(st, n, now=self.now) for n in sorted(st.desired.instances)]
        by_status = _Tally(r.status for r in rows)
        statuses = sorted(
            {"running", "ADMIN_down", "ERROR_down", "ERROR_up", "ERROR_nodedown", "unplaced"}
            | set(by_status)
        )
        yield _gauge(
            "corral_instances",
            "Declared instances by status.",
            ("status",),
            [((s,), by_status.get(s, 0)) for s in statuses],
        )
        yield _gauge(
            "corral_instances_degraded",
            "Instances whose disks are not UpToDate on both nodes.",
            (),
            [((), sum(1 for r in rows if r.degraded))],
        )
        yield _gauge(
            "corral_instances_restart_required",
            "Instances whose memory/vcpus change waits for a reboot.",
            (),
            [((), sum(1 for r in rows if r.restart_required))],
        )

    def _drbd(self) -> Iterator[Metric]:
        resources: _Tally[tuple[str, ...]] = _Tally()
        sync: list[tuple[tuple[str, ...], float]] = []
        for node, obs in sorted(self.state.observed.items()):
            for res in obs.drbd:
                connection = res.peers[0].connection if res.peers else "StandAlone"
                resources[(str(node), res.role, res.disk, connection)] += 1
                sync += [((str(node), res.name, p.peer), p.percent_in_sync) for p in res.peers]
        yield _gauge(
            "corral_drbd_resources",
            "DRBD resources seen on nodes by role, local disk state and connection state.",
            ("node", "role", "disk", "connection"),
            sorted(resources.items()),
        )
        yield _gauge(
            "corral_drbd_sync_percent",
            "Percent of the peer's copy in sync, per resource and peer, as the node reports.",
            ("node", "resource", "peer"),
            sync,
        )

    def _jobs(self) -> Iterator[Metric]:
        jobs = self.state.jobs.values()
        by_kind = _Tally((j.kind, j.status.value) for j in jobs)
        yield _gauge(
            "corral_jobs", "Jobs by kind and status.", ("kind", "status"), sorted(by_kind.items())
        )
        yield _gauge(
            "corral_jobs_active",
            "Jobs queued, running or canceling.",
            (),
            [((), sum(1 for j in jobs if j.status in _ACTIVE))],
        )
        durations: dict[tuple[str, str], list[float]] = {}
        for job in jobs:
            if job.started_at is not None and job.ended_at is not None:
                key = (job.kind, job.status.value)
                durations.setdefault(key, []).append(max(0.0, job.ended_at - job.started_at))
        hist = HistogramMetricFamily(
            "corral_job_duration_seconds",
            "Finished jobs: start to end, by kind.",
            labels=("kind", "status"),
        )
        for key, values in sorted(durations.items()):
            buckets = [(_le(b), float(sum(1 for v in values if v <= b))) for b in JOB_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            hist.add_metric(list(key), buckets, sum(values))
        yield hist

    def _alerts(self) -> Metric:
        alerts = _Tally(a.severity for a in self.state.alerts.values())
        return _gauge(
            "corral_alerts",
            "Open alerts by severity.",
            ("severity",),
            [((s,), alerts.get(s, 0)) for s in sorted({"warning", "critical"} | set(alerts))],
        )

    def _node_loss(self) -> Metric:
        tl = self.node_loss
        return _gauge(
            "corral_last_node_loss_phase_seconds",
            "The last node loss: seconds from its first sign (suspect) to each phase.",
            ("node", "phase"),
            [((tl.node or "", p), s) for p, s in sorted(tl.phases().items(), key=lambda kv: kv[1])],
        )


def _le(bound: float) -> str:
    """A bucket bound written the way the client's own histograms write theirs."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text
