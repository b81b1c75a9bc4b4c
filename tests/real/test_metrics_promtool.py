"""`/metrics` checked by Prometheus' own linter: `promtool check metrics` (Debian's
prometheus package) reads a scrape of a folded cluster with every kind of metric
populated and reports no problem."""

from __future__ import annotations

import subprocess

from orchestrator.api.metrics import ApiMetrics, render_metrics
from tests.support.states.plan_states import NOW, A, B, online, res, state
from tests.support.tools import require_tool


def test_promtool_finds_nothing_to_complain_about() -> None:
    promtool = require_tool("promtool", "prometheus")
    metrics = ApiMetrics()
    metrics.ssh.observe(node="node1", command="lvs", duration_s=0.02, ok=False)
    metrics.requests.labels(method="GET", route="/api/v1/status", status="200").inc()
    metrics.request_seconds.labels(route="/api/v1/status").observe(0.01)
    metrics.auth_failures.labels(reason="missing").inc()
    metrics.etcd_seconds.labels(operation="append").observe(0.002)
    metrics.reconcile_seconds.observe(0.4)
    cluster = state({A: online(A, drbd=(res("Primary", "UpToDate", B),)), B: online(B)})
    text = render_metrics(cluster, metrics, now=NOW)
    got = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 0 and not got.stdout.strip() and not got.stderr.strip(), (
        got.stdout + got.stderr
    )
