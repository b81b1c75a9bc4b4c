"""Prometheus text exposition (format 0.0.4) for `/metrics`: gauges derived from the
folded ClusterState at scrape time (node capacity and usage, node health, instances
by status, degraded instances, DRBD resources by connection and disk state, sync
percent, jobs by kind and status, job durations, alerts, event-log revision), and
counters/histograms fed by the API (requests, auth failures) and by whoever runs
node commands (SSH latency and errors, through `SshCommandMetrics.observe`).

Must not: touch etcd or nodes, or keep cluster state of its own (everything
cluster-related is recomputed from the state passed in).
"""

from __future__ import annotations

import math
import threading
from collections import Counter as _Tally
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from events.model import (
    JobStatus,
    NodeHealth,
)
from events.state import ClusterState
from orchestrator.cluster_report import instance_row, node_rows
from orchestrator.heal_timeline import HealTimeline

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

LabelPairs = tuple[tuple[str, str], ...]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _head(name: str, kind: str, help_text: str) -> list[str]:
    text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


@dataclass
class CounterMetric:
    """A monotonically increasing counter with labels; thread-safe."""

    name: str
    help: str
    label_names: tuple[str, ...] = ()
    _values: dict[LabelPairs, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = tuple((n, str(labels.get(n, ""))) for n in self.label_names)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        key = tuple((n, str(labels.get(n, ""))) for n in self.label_names)
        return self._values.get(key, 0.0)

    def samples(self) -> list[tuple[LabelPairs, float]]:
        with self._lock:
            return sorted(self._values.items())

    def render(self) -> list[str]:
        lines = _head(self.name, "counter", self.help)
        with self._lock:
            items = sorted(self._values.items())
        lines += [f"{self.name}{_labels(k)} {_num(v)}" for k, v in items]
        return lines


@dataclass
class _Series:
    buckets: list[int]
    count: int = 0
    total: float = 0.0


@dataclass
class HistogramMetric:
    """A cumulative histogram with labels; thread-safe."""

    name: str
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    label_names: tuple[str, ...] = ()
    _series: dict[LabelPairs, _Series] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, value: float, **labels: str) -> None:
        key = tuple((n, str(labels.get(n, ""))) for n in self.label_names)
        with self._lock:
            s = self._series.setdefault(key, _Series(buckets=[0] * len(self.buckets)))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    s.buckets[i] += 1
            s.count += 1
            s.total += value

    def count(self, **labels: str) -> int:
        key = tuple((n, str(labels.get(n, ""))) for n in self.label_names)
        s = self._series.get(key)
        return s.count if s else 0

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(
                (k, _Series(buckets=list(s.buckets), count=s.count, total=s.total))
                for k, s in self._series.items()
            )
        return _head(self.name, "histogram", self.help) + _histogram_lines(
            self.name, self.buckets, items
        )


def _histogram_lines(
    name: str, buckets: Sequence[float], series: Iterable[tuple[LabelPairs, _Series]]
) -> list[str]:
    lines = []
    for key, s in series:
        for bound, n in zip(buckets, s.buckets, strict=True):
            lines.append(f"{name}_bucket{_labels((*key, ('le', _num(bound))))} {n}")
        lines.append(f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {s.count}")
        lines.append(f"{name}_sum{_labels(key)} {_num(s.total)}")
        lines.append(f"{name}_count{_labels(key)} {s.count}")
    return lines


@dataclass
class SshCommandMetrics:
    """What the SSH layer reports per node command. Wire it where commands run:
    `observe(node=..., command=<summary's first word>, duration_s=..., ok=...)`
    after each command (ok=False for timeouts and transport errors)."""

    latency: HistogramMetric = field(
        default_factory=lambda: HistogramMetric(
            name="corral_ssh_command_duration_seconds",
            help="Node commands run over SSH, by node and command, and how long they took.",
            label_names=("node", "command"),
        )
    )
    errors: CounterMetric = field(
        default_factory=lambda: CounterMetric(
            name="corral_ssh_command_errors_total",
            help="Node commands over SSH that timed out or lost their connection.",
            label_names=("node", "command"),
        )
    )

    def observe(self, *, node: str, command: str, duration_s: float, ok: bool) -> None:
        self.latency.observe(duration_s, node=node, command=command)
        if not ok:
            self.errors.inc(node=node, command=command)

    def render(self) -> list[str]:
        return self.latency.render() + self.errors.render()


@dataclass
class ApiMetrics:
    """The process-wide counters and histograms `/metrics` exposes next to the
    gauges derived from the state."""

    requests: CounterMetric = field(
        default_factory=lambda: CounterMetric(
            name="corral_api_requests_total",
            help="HTTP API requests by method, route and status code.",
            label_names=("method", "route", "status"),
        )
    )
    request_seconds: HistogramMetric = field(
        default_factory=lambda: HistogramMetric(
            name="corral_api_request_duration_seconds",
            help="HTTP API request handling time by route (streams excluded).",
            label_names=("route",),
        )
    )
    auth_failures: CounterMetric = field(
        default_factory=lambda: CounterMetric(
            name="corral_api_auth_failures_total",
            help="Requests refused with 401, by reason (missing, malformed, unknown token).",
            label_names=("reason",),
        )
    )
    forbidden: CounterMetric = field(
        default_factory=lambda: CounterMetric(
            name="corral_api_forbidden_total",
            help="Requests refused with 403 (role or scope does not allow it).",
            label_names=("principal",),
        )
    )
    ssh: SshCommandMetrics = field(default_factory=SshCommandMetrics)
    etcd_seconds: HistogramMetric = field(
        default_factory=lambda: HistogramMetric(
            name="corral_etcd_request_duration_seconds",
            help="etcd requests of the event store (append, get), by operation.",
            label_names=("operation",),
        )
    )
    reconcile_seconds: HistogramMetric = field(
        default_factory=lambda: HistogramMetric(
            name="corral_reconcile_duration_seconds",
            help="One reconcile pass of one instance: plan, run its steps, re-probe.",
            label_names=(),
        )
    )
    node_loss: HealTimeline = field(default_factory=HealTimeline)

    def render(self) -> list[str]:
        return (
            self.requests.render()
            + self.request_seconds.render()
            + self.auth_failures.render()
            + self.forbidden.render()
            + self.ssh.render()
            + self.etcd_seconds.render()
            + self.reconcile_seconds.render()
            + node_loss_lines(self.node_loss)
        )


def node_loss_lines(timeline: HealTimeline) -> list[str]:
    name = "corral_last_node_loss_phase_seconds"
    lines = _head(
        name, "gauge", "The last node loss: seconds from its first sign (suspect) to each phase."
    )
    for phase, seconds in sorted(timeline.phases().items(), key=lambda kv: kv[1]):
        labels = _labels((("node", timeline.node or ""), ("phase", phase)))
        lines.append(f"{name}{labels} {_num(seconds)}")
    return lines


@dataclass
class _Gauges:
    lines: list[str] = field(default_factory=list)

    def family(
        self, name: str, help_text: str, samples: Iterable[tuple[LabelPairs, float]]
    ) -> None:
        self.lines += _head(name, "gauge", help_text)
        self.lines += [f"{name}{_labels(k)} {_num(v)}" for k, v in samples]


def state_metrics(state: ClusterState, *, now: float) -> list[str]:
    """Gauges (and the job-duration histogram) computed from one folded state."""
    g = _Gauges()
    g.family(
        "corral_event_log_revision",
        "etcd revision of the last event folded into the orchestrator's state.",
        [((), state.revision)],
    )
    g.family("corral_events", "Events folded so far.", [((), state.event_count)])
    rows = node_rows(state)
    per_node: list[tuple[str, str, str]] = [
        ("memory_mib", "corral_node_memory_mib", "Memory instances may use on the node (MiB)."),
        ("memory_used_mib", "corral_node_memory_used_mib", "Memory used by primaries (MiB)."),
        ("n1_reserve_mib", "corral_node_n1_reserve_mib", "Memory kept for N+1 failover (MiB)."),
        ("disk_mib", "corral_node_disk_mib", "Disk of the node's volume group (MiB)."),
        ("disk_used_mib", "corral_node_disk_used_mib", "Disk used by instance volumes (MiB)."),
        ("primaries", "corral_node_primaries", "Instances whose primary is the node."),
        ("secondaries", "corral_node_secondaries", "Instances whose secondary is the node."),
        ("vms_running", "corral_node_vms_running", "VM processes running on the node."),
    ]
    for attr, name, help_text in per_node:
        g.family(name, help_text, [((("node", r.name),), getattr(r, attr)) for r in rows])
    g.family(
        "corral_node_n1_ok",
        "1 when the node could absorb the failover of its peers (N+1).",
        [((("node", r.name),), 1 if r.n1_ok else 0) for r in rows],
    )
    g.family(
        "corral_node_health",
        "1 for the node's current health, 0 for the others.",
        [
            ((("node", r.name), ("health", h.value)), 1 if r.health == h.value else 0)
            for r in rows
            for h in NodeHealth
        ],
    )
    g.family(
        "corral_node_flag",
        "1 when the node has the flag (drained, offline).",
        [
            ((("node", r.name), ("flag", f)), 1 if f in r.flags else 0)
            for r in rows
            for f in ("drained", "offline")
        ],
    )
    irows = [instance_row(state, n, now=now) for n in sorted(state.desired.instances)]
    by_status = _Tally(r.status for r in irows)
    statuses = sorted(
        {"running", "ADMIN_down", "ERROR_down", "ERROR_up", "ERROR_nodedown", "unplaced"}
        | set(by_status)
    )
    g.family(
        "corral_instances",
        "Declared instances by status.",
        [((("status", s),), by_status.get(s, 0)) for s in statuses],
    )
    g.family(
        "corral_instances_degraded",
        "Instances whose disks are not UpToDate on both nodes.",
        [((), sum(1 for r in irows if r.degraded))],
    )
    g.family(
        "corral_instances_restart_required",
        "Instances whose memory/vcpus change waits for a reboot.",
        [((), sum(1 for r in irows if r.restart_required))],
    )
    drbd: _Tally[LabelPairs] = _Tally()
    sync: list[tuple[LabelPairs, float]] = []
    for node, obs in sorted(state.observed.items()):
        for res in obs.drbd:
            connection = res.peers[0].connection if res.peers else "StandAlone"
            key = (("node", str(node)), ("role", res.role), ("disk", res.disk))
            drbd[(*key, ("connection", connection))] += 1
            for peer in res.peers:
                sync.append(
                    (
                        (("node", str(node)), ("resource", res.name), ("peer", peer.peer)),
                        peer.percent_in_sync,
                    )
                )
    g.family(
        "corral_drbd_resources",
        "DRBD resources seen on nodes by role, local disk state and connection state.",
        sorted(drbd.items()),
    )
    g.family(
        "corral_drbd_sync_percent",
        "Percent of the peer's copy in sync, per resource and peer, as the node reports.",
        sync,
    )
    jobs = _Tally((j.kind, j.status.value) for j in state.jobs.values())
    g.family(
        "corral_jobs",
        "Jobs by kind and status.",
        [((("kind", k), ("status", s)), n) for (k, s), n in sorted(jobs.items())],
    )
    g.family(
        "corral_jobs_active",
        "Jobs queued, running or canceling.",
        [
            (
                (),
                sum(
                    1
                    for j in state.jobs.values()
                    if j.status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELING)
                ),
            )
        ],
    )
    series: dict[LabelPairs, _Series] = {}
    for job in state.jobs.values():
        if job.started_at is None or job.ended_at is None:
            continue
        duration = max(0.0, job.ended_at - job.started_at)
        jkey: LabelPairs = (("kind", job.kind), ("status", job.status.value))
        s = series.setdefault(jkey, _Series(buckets=[0] * len(JOB_BUCKETS)))
        for i, bound in enumerate(JOB_BUCKETS):
            if duration <= bound:
                s.buckets[i] += 1
        s.count += 1
        s.total += duration
    g.lines += _head(
        "corral_job_duration_seconds", "histogram", "Finished jobs: start to end, by kind."
    )
    g.lines += _histogram_lines("corral_job_duration_seconds", JOB_BUCKETS, sorted(series.items()))
    alerts = _Tally(a.severity for a in state.alerts.values())
    g.family(
        "corral_alerts",
        "Open alerts by severity.",
        [
            ((("severity", s),), alerts.get(s, 0))
            for s in sorted({"warning", "critical"} | set(alerts))
        ],
    )
    return g.lines


def render_metrics(state: ClusterState, metrics: ApiMetrics, *, now: float) -> str:
    return "\n".join(state_metrics(state, now=now) + metrics.render()) + "\n"
