"""Read-only views of the folded state for people: one row per instance and per
node (with Ganeti-style instance status words), the cluster summary behind
`corral status`, and the findings of `corral cluster verify` (N+1, degraded DRBD,
orphan volumes and VM processes, instances running where they should not).

Pure: no I/O, no logging; `now` is passed in.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import msgspec

from events.codec import to_plain
from events.ids import InstanceName, NodeName
from events.model import Event, NodeHealth, instance_key
from events.specs import PowerState
from events.state import ClusterState, JobState, NodeObservation
from orchestrator.incremental import PerInstance
from reactors.naming import parse_disk_name
from reactors.placement.node_loads import NodeLoad, loads
from reactors.plans.instance import plan_instance
from reactors.plans.queries import vm_alive, vm_on
from reactors.plans.seen import primaries_on, secondaries_on


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRow:
    # One instance's row (`corral instance list`, `GET /api/v1/instances`).
    # The API document's schema is read from this class (`orchestrator.api.shapes`),
    # with no key allowed beyond its fields: pydantic's config, as a plain dict so
    # that this module does not import pydantic.
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    name: str
    status: str  # running, ADMIN_down, ERROR_down, ERROR_nodedown, building, unplaced
    primary: str | None
    secondary: str | None
    memory_mib: int
    vcpus: int
    disk_mib: int
    degraded: bool
    converged: bool
    restart_required: bool
    waiting: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRow:
    # One node's row (`corral node list`, `GET /api/v1/nodes`), read by the API
    # document's schema as InstanceRow is.
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    name: str
    health: str
    flags: tuple[str, ...]  # drained, offline, fenced
    memory_mib: int
    memory_used_mib: int  # by primaries
    n1_reserve_mib: int  # largest failover it must absorb
    n1_ok: bool
    disk_mib: int
    disk_used_mib: int
    primaries: int
    secondaries: int
    vms_running: int


def instance_row(state: ClusterState, name: InstanceName, *, now: float) -> InstanceRow:
    """One instance's row, kept from one state to the next until it changes."""
    return _ROWS.get(state, name, now=now)


def instance_rows(
    state: ClusterState, names: Iterable[InstanceName], *, now: float
) -> list[InstanceRow]:
    return _ROWS.many(state, names, now=now)


_ROWS_CODEC = (msgspec.json.Encoder(), msgspec.json.Decoder(dict[InstanceName, InstanceRow]))


def saved_rows(state: ClusterState, *, now: float) -> bytes:
    """Every instance's row of `state`, encoded to be kept with its checkpoint.
    Built with a cache of its own: it runs in a thread beside the event loop."""
    cache = PerInstance(_instance_row)
    names = sorted(state.desired.instances)
    rows = dict(zip(names, cache.many(state, names, now=now), strict=True))
    return _ROWS_CODEC[0].encode(rows)


def prime_rows(state: ClusterState, data: bytes) -> None:
    """Start the kept rows from those saved with the checkpoint `state`."""
    try:
        rows = _ROWS_CODEC[1].decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return  # a row of another shape: built again
    _ROWS.prime(state, rows)


def _instance_row(state: ClusterState, name: InstanceName, now: float) -> InstanceRow:
    spec = state.desired.instances[name]
    placement = state.placements.get(name)
    plan = plan_instance(state=state, instance=name, now=now)
    if placement is None:
        status = "unplaced"
    else:
        obs = state.observed.get(placement.primary)
        running = vm_alive(vm_on(obs, name))
        health = obs.health if obs is not None else NodeHealth.UNKNOWN
        if health.down and not running:
            status = "ERROR_nodedown"
        elif spec.power is PowerState.STOPPED:
            status = "ERROR_up" if running else "ADMIN_down"
        elif running:
            status = "running"
        elif plan.converged or plan.error_down:
            status = "ERROR_down"
        else:
            built = any(s.kind.value == "start-vm" for s in plan.steps) or not plan.steps
            status = "starting" if built else "building"
    return InstanceRow(
        name=name,
        status=status,
        primary=placement.primary if placement else None,
        secondary=placement.secondary if placement else None,
        memory_mib=spec.memory_mib,
        vcpus=spec.vcpus,
        disk_mib=spec.disk_mib,
        degraded=plan.degraded,
        converged=plan.converged,
        restart_required=plan.restart_required,
        waiting=plan.waiting,
        tags=tuple(sorted(spec.tags)),
    )


_ROWS = PerInstance(_instance_row)
_ROW_TEXTS = PerInstance(
    lambda state, name, now: json.dumps(
        row_json(asdict(instance_row(state, name, now=now))), default=str, separators=(",", ":")
    )
)


def instance_rows_json(state: ClusterState, names: Iterable[InstanceName], *, now: float) -> str:
    """`corral instance list --json` rows as one compact JSON array (the native
    API's instance list), each row's text kept until the instance changes."""
    return "[" + ",".join(_ROW_TEXTS.many(state, names, now=now)) + "]"


_LOADS: list[tuple[tuple[object, ...], dict[NodeName, NodeLoad]]] = []


def _loads(state: ClusterState) -> dict[NodeName, NodeLoad]:
    """The allocator's per-node loads, worked out again only when placements or
    specs changed (they do not depend on observations)."""
    key = (state.placements, state.desired.nodes, state.desired.instances, state.desired.policy)
    if _LOADS and all(a is b for a, b in zip(_LOADS[0][0], key, strict=True)):
        return _LOADS[0][1]
    load = loads(state)
    _LOADS[:] = [(key, load)]
    return load


def node_rows(state: ClusterState) -> list[NodeRow]:
    """One row per declared node."""
    load = _loads(state)
    rows = []
    for name in sorted(state.desired.nodes):
        spec = state.desired.nodes[name]
        obs = state.observed.get(name)
        ld = load[name]
        flags = tuple(
            f
            for f, on in (
                ("drained", spec.drained),
                ("offline", spec.offline),
            )
            if on
        )
        rows.append(
            NodeRow(
                name=name,
                health=(obs.health.value if obs else NodeHealth.UNKNOWN.value),
                flags=flags,
                memory_mib=ld.mem_total,
                memory_used_mib=ld.mem_primary,
                n1_reserve_mib=ld.n1_need(),
                n1_ok=ld.n1_need() <= ld.mem_free,
                disk_mib=ld.disk_total,
                disk_used_mib=ld.disk_used,
                primaries=len(primaries_on(state, name)),
                secondaries=len(secondaries_on(state, name)),
                vms_running=sum(1 for vm in (obs.vms if obs else ()) if vm_alive(vm)),
            )
        )
    return rows


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    severity: str  # "error" or "warning"
    check: str  # n+1, degraded, orphan-volume, orphan-vm, wrong-node, unplaced, alert
    subject: str
    message: str


def verify(state: ClusterState, *, now: float) -> list[Finding]:
    """What `corral cluster verify` reports, from the last observations: N+1 per
    node, each instance's state, what nodes run or hold that they should not, and
    every open alert."""
    out = _n_plus_one_findings(state)
    out += _instance_findings(state, now=now)
    for node, obs in sorted(state.observed.items()):
        if obs.health != NodeHealth.FENCED:
            out += _orphan_vms(state, node, obs)
            out += _orphan_volumes(state, node, obs)
    for alert in sorted(state.alerts.values(), key=lambda a: a.alert):
        out.append(
            Finding(
                severity="error" if alert.severity == "critical" else "warning",
                check="alert",
                subject=alert.subject,
                message=alert.message,
            )
        )
    return out


def _n_plus_one_findings(state: ClusterState) -> list[Finding]:
    out: list[Finding] = []
    for nrow in node_rows(state):
        if not nrow.n1_ok:
            out.append(
                Finding(
                    severity="warning",
                    check="n+1",
                    subject=f"node/{nrow.name}",
                    message=f"{nrow.name} could not absorb the failover of its largest peer: "
                    f"needs {nrow.n1_reserve_mib}M free, has "
                    f"{nrow.memory_mib - nrow.memory_used_mib}M",
                )
            )
    return out


def _instance_findings(state: ClusterState, *, now: float) -> list[Finding]:
    out: list[Finding] = []
    for name in sorted(state.desired.instances):
        row = instance_row(state, name, now=now)
        if row.status == "unplaced":
            out.append(
                Finding(
                    severity="error",
                    check="unplaced",
                    subject=f"instance/{name}",
                    message=state.refusals.get(name, "waiting for placement"),
                )
            )
        elif row.degraded:
            out.append(
                Finding(
                    severity="warning",
                    check="degraded",
                    subject=f"instance/{name}",
                    message=f"{name}'s disks are not UpToDate on both {row.primary} and "
                    f"{row.secondary}" + (f": {'; '.join(row.waiting)}" if row.waiting else ""),
                )
            )
        if row.status in ("ERROR_down", "ERROR_nodedown", "ERROR_up"):
            out.append(
                Finding(
                    severity="error",
                    check="instance-state",
                    subject=f"instance/{name}",
                    message=f"{name} is {row.status}",
                )
            )
    return out


def _orphan_vms(state: ClusterState, node: NodeName, obs: NodeObservation) -> list[Finding]:
    out: list[Finding] = []
    for vm in obs.vms:
        if not vm_alive(vm):
            continue
        inst = InstanceName(vm.name)
        p = state.placements.get(inst)
        if inst not in state.desired.instances:
            out.append(
                Finding(
                    severity="warning",
                    check="orphan-vm",
                    subject=f"node/{node}",
                    message=f"{node} runs {vm.name} (pid {vm.pid}), which is not declared",
                )
            )
        elif p is not None and p.primary != node:
            out.append(
                Finding(
                    severity="error",
                    check="wrong-node",
                    subject=f"instance/{vm.name}",
                    message=f"{vm.name} runs on {node}; its primary is {p.primary}",
                )
            )
    return out


def _orphan_volumes(state: ClusterState, node: NodeName, obs: NodeObservation) -> list[Finding]:
    out: list[Finding] = []
    for vol in obs.volumes:
        parsed = parse_disk_name(vol.name)
        if parsed is None:
            continue
        inst, _ = parsed
        p = state.placements.get(inst)
        if inst not in state.desired.instances or (
            p is not None and node not in (p.primary, p.secondary, p.superseded)
        ):
            out.append(
                Finding(
                    severity="warning",
                    check="orphan-volume",
                    subject=f"node/{node}",
                    message=f"{node} holds volume {vol.vg}/{vol.name} that no instance "
                    "placed there uses",
                )
            )
    return out


def nodes_by_health(state: ClusterState) -> dict[str, list[NodeName]]:
    groups: dict[str, list[NodeName]] = {}
    for name in sorted(state.desired.nodes):
        obs = state.observed.get(name)
        health = obs.health.value if obs else "unknown"
        groups.setdefault(health, []).append(name)
    return groups


def job_json(job: JobState, *, with_log: bool) -> dict[str, Any]:
    """`corral job info --json` (with the log) or one `job list --json` row."""
    out: dict[str, Any] = {
        "job_id": job.job_id,
        "kind": job.kind,
        "targets": list(job.targets),
        "params": dict(job.params),
        "status": job.status.value,
        "actor": job.actor,
        "reason": job.reason,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "error": job.error,
    }
    if with_log:
        out["log"] = [{"time": t, "line": line} for t, line in job.log]
    return out


def event_json(revision: int, event: Event) -> dict[str, Any]:
    """One event as `corral events --json` prints it."""
    return {
        "revision": revision,
        "type": event.TYPE,
        "objects": list(event.objects()),
        **to_plain(event),
    }


def status_dict(state: ClusterState, *, now: float) -> dict[str, Any]:
    rows = instance_rows(state, sorted(state.desired.instances), now=now)
    nodes = node_rows(state)
    jobs = [j for j in state.jobs.values() if j.status in ("queued", "running", "canceling")]
    applied = state.last_applied
    return {
        "cluster": state.desired.name,
        "revision": state.revision,
        "events": state.event_count,
        "nodes": {"total": len(nodes), "by_health": nodes_by_health(state)},
        "instances": {
            "total": len(rows),
            "by_status": dict(sorted(Counter(r.status for r in rows).items())),
            "degraded": [r.name for r in rows if r.degraded],
            "restart_required": [r.name for r in rows if r.restart_required],
        },
        "n_plus_one": {
            "policy": state.desired.policy.n_plus_one,
            "failing_nodes": [n.name for n in nodes if not n.n1_ok],
        },
        "alerts": [
            {"alert": a.alert, "severity": a.severity, "subject": a.subject, "message": a.message}
            for a in sorted(state.alerts.values(), key=lambda a: a.alert)
        ],
        "active_jobs": [
            {"job_id": j.job_id, "kind": j.kind, "targets": list(j.targets), "status": j.status}
            for j in sorted(jobs, key=lambda j: j.job_id)
        ],
        "last_apply": (
            {
                "digest": applied.digest,
                "author": applied.author,
                "message": applied.message,
                "files": list(applied.files),
                "time": applied.time,
            }
            if applied
            else None
        ),
        "node_table": [asdict(n) for n in nodes],
    }


def instance_info(state: ClusterState, name: InstanceName, *, now: float) -> dict[str, Any]:
    """`corral instance info --json` (and the native API's instance view)."""
    spec = state.desired.instances[name]
    placement = state.placements.get(name)
    record = state.last_steps.get(instance_key(name))
    return {
        **row_json(asdict(instance_row(state, name, now=now))),
        "os": spec.os,
        "power": spec.power.value,
        "disks": [
            {"index": d.index, "size_mib": d.size_mib, "drbd_minor": d.minor, "drbd_port": d.port}
            for d in (placement.disks if placement else ())
        ],
        "nics": [asdict(n) for n in spec.nics],
        "placed_by": placement.kind.value if placement else None,
        "refusal": state.refusals.get(name),
        "last_step": asdict(record) if record is not None else None,
        "version": state.versions.get(instance_key(name), 0),
    }


def row_json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in row.items()}


def node_info(
    state: ClusterState, name: NodeName, *, visible: Callable[[InstanceName], bool] | None = None
) -> dict[str, Any]:
    """`corral node info --json`; with `visible`, only the instances it lets through
    are listed (a scoped principal's own)."""
    row = next(r for r in node_rows(state) if r.name == name)
    spec = state.desired.nodes[name]
    obs = state.observed.get(name)

    def shown(names: list[InstanceName]) -> list[str]:
        return sorted(n for n in names if visible is None or visible(n))

    return {
        **row_json(asdict(row)),
        "address": spec.address,
        "port": spec.port,
        "replication_address": spec.drbd_address,
        "group": spec.group,
        "tags": sorted(spec.tags),
        "fence_agent": spec.fence.agent if spec.fence else None,
        "fenced_by": obs.fenced_by if obs else "",
        "health_detail": obs.health_detail if obs else "",
        "boot_id": obs.facts.boot_id if obs and obs.facts else None,
        "instances_primary": shown([i for i, p in state.placements.items() if p.primary == name]),
        "instances_secondary": shown(
            [i for i, p in state.placements.items() if p.secondary == name]
        ),
    }
