"""`/metrics` as scrapers read it: every metric name corral has exposed stays, the
whole exposition parses with the Prometheus client's own parser, label values with
quotes, backslashes and newlines round-trip, and the standard process metrics are
there. (`tests/real/test_metrics_promtool.py` also runs `promtool check metrics`.)"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from events.ids import EventId, NodeName
from events.model import NodeFenced, NodeHealth, NodeHealthChanged
from events.state import ClusterState
from orchestrator.api.metrics import ApiMetrics, render_metrics
from tests.support.states.plan_states import NOW, A, B, online, res, state

# Every family /metrics exposed before prometheus_client; dashboards use these names.
USER_METRICS = {
    "corral_event_log_revision": "gauge",
    "corral_events": "gauge",
    "corral_node_memory_mib": "gauge",
    "corral_node_memory_used_mib": "gauge",
    "corral_node_n1_reserve_mib": "gauge",
    "corral_node_disk_mib": "gauge",
    "corral_node_disk_used_mib": "gauge",
    "corral_node_primaries": "gauge",
    "corral_node_secondaries": "gauge",
    "corral_node_vms_running": "gauge",
    "corral_node_n1_ok": "gauge",
    "corral_node_health": "gauge",
    "corral_node_flag": "gauge",
    "corral_instances": "gauge",
    "corral_instances_degraded": "gauge",
    "corral_instances_restart_required": "gauge",
    "corral_drbd_resources": "gauge",
    "corral_drbd_sync_percent": "gauge",
    "corral_jobs": "gauge",
    "corral_jobs_active": "gauge",
    "corral_job_duration_seconds": "histogram",
    "corral_alerts": "gauge",
    "corral_api_requests_total": "counter",
    "corral_api_request_duration_seconds": "histogram",
    "corral_api_auth_failures_total": "counter",
    "corral_api_forbidden_total": "counter",
    "corral_ssh_command_duration_seconds": "histogram",
    "corral_ssh_command_errors_total": "counter",
    "corral_etcd_request_duration_seconds": "histogram",
    "corral_reconcile_duration_seconds": "histogram",
    "corral_last_node_loss_phase_seconds": "gauge",
}


def cluster_state() -> ClusterState:
    return state({A: online(A, drbd=(res("Primary", "UpToDate", B),)), B: online(B)})


def _types(text: str) -> dict[str, str]:
    return dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))


def test_every_metric_name_users_have_is_exposed_and_parses() -> None:
    metrics = ApiMetrics()
    metrics.ssh.observe(node="node1", command="lvs", duration_s=0.02, ok=True)
    metrics.ssh.observe(node="node1", command="lvs", duration_s=30.0, ok=False)
    odd = 'q"u\\o\nte'
    metrics.forbidden.labels(principal=odd).inc()
    text = render_metrics(cluster_state(), metrics, now=NOW)
    assert text.endswith("\n")
    types = _types(text)
    assert {n: types.get(n) for n in USER_METRICS} == USER_METRICS
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= set(types)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        samples[("corral_ssh_command_errors_total", (("command", "lvs"), ("node", "node1")))] == 1
    )
    count = ("corral_ssh_command_duration_seconds_count", (("command", "lvs"), ("node", "node1")))
    assert samples[count] == 2
    assert samples[("corral_api_forbidden_total", (("principal", odd),))] == 1
    assert samples[("corral_event_log_revision", ())] == cluster_state().revision
    assert any(name == "corral_node_memory_mib" for name, _ in samples)
    assert metrics.value("corral_ssh_command_errors_total", node="node1", command="lvs") == 1


def test_scrape_time_gauges_follow_the_state_passed_in() -> None:
    metrics = ApiMetrics()
    empty = render_metrics(ClusterState(), metrics, now=NOW)
    assert "corral_event_log_revision 0.0" in empty
    assert "corral_node_memory_mib{" not in empty
    assert "corral_last_node_loss_phase_seconds{" not in empty
    n2 = NodeName("node2")
    for e in (
        NodeHealthChanged(
            id=EventId("1"), time=100.0, actor="r", node=n2, health=NodeHealth.SUSPECT
        ),
        NodeFenced(id=EventId("2"), time=103.0, actor="r", node=n2, method="agent"),
    ):
        metrics.node_loss.on_event(e)
    text = render_metrics(ClusterState(), metrics, now=NOW)
    assert 'corral_last_node_loss_phase_seconds{node="node2",phase="fenced"} 3.0' in text
