"""`corral serve` as an operator runs it: a lab from `corral sim up`, a real etcd,
the orchestrator process with the native API, the dashboard and the RAPI, a cluster
file applied with the CLI, the APIs answering, and SIGTERM stopping it cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devtools.local_etcd import LocalEtcd
from tests.support.cluster.lab_files import lab_cluster_yaml

CORRAL = [sys.executable, "-m", "orchestrator.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, *, headers: dict[str, str] | None = None, timeout: float = 30) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
                body: bytes = resp.read()
                return body
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {last}")


def test_serve_runs_the_orchestrator_and_its_apis(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    up = subprocess.run(
        [*CORRAL, "sim", "up", "--nodes", "2", "--state-dir", str(lab_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stderr
    etcd = LocalEtcd(data_dir=tmp_path / "etcd", tls=True).start()
    serve = None
    try:
        inv = json.loads((lab_dir / "inventory.json").read_text())
        env = {**os.environ, **etcd.client_env("orchestrator"), "CORRAL_CLUSTER": "lab"}
        tokens = tmp_path / "tokens.yaml"
        minted = subprocess.run(
            [*CORRAL, "token", "add", "ops", "--role", "operator", "--file", str(tokens)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        assert token not in tokens.read_text()  # only its hash is stored
        api_port, rapi_port = free_port(), free_port()
        serve = subprocess.Popen(
            [
                *CORRAL,
                "serve",
                "--lab",
                str(lab_dir / "inventory.json"),
                "--api",
                f"127.0.0.1:{api_port}",
                "--tokens",
                str(tokens),
                "--rapi",
                f"127.0.0.1:{rapi_port}",
                "--rapi-cert-dir",
                str(tmp_path / "cert"),
                "--rapi-anonymous-reads",
                "--probe-interval",
                "0.3",
                "--log-format",
                "json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        auth = {"Authorization": f"Bearer {token}"}
        status = json.loads(wait_http(f"http://127.0.0.1:{api_port}/api/v1/status", headers=auth))
        assert status["revision"] >= 0
        f = tmp_path / "cluster.yaml"
        f.write_text(
            lab_cluster_yaml(
                inv, instances="  - name: web1\n    memory: 512M\n    vcpus: 1\n    disks: [10G]\n"
            )
        )
        applied = subprocess.run(
            [*CORRAL, "apply", "-f", str(f), "--wait", "--timeout", "60"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        rows = json.loads(wait_http(f"http://127.0.0.1:{api_port}/api/v1/instances", headers=auth))
        assert [(r["name"], r["status"]) for r in rows] == [("web1", "running")]
        metrics = wait_http(f"http://127.0.0.1:{api_port}/metrics", headers=auth).decode()
        # The probes and the build steps, by the node helper's verb (a step of
        # several requests is one batch).
        assert 'corral_ssh_command_duration_seconds_count{command="probe",node="node1"}' in metrics
        commands = set(re.findall(r'command="([^"]*)"', metrics))
        assert {"batch", "drbdadm", "vm-start"} <= commands, commands
        assert "corral_ssh_command_errors_total{" not in metrics, metrics[-600:]
        assert 'corral_etcd_request_duration_seconds_count{operation="append"}' in metrics
        assert "corral_reconcile_duration_seconds_count " in metrics
        page = wait_http(f"http://127.0.0.1:{api_port}/")
        assert b"corral" in page and b"dashboard.js" in page
        info = json.loads(wait_http(f"https://127.0.0.1:{rapi_port}/2/info"))
        assert info["name"] == "lab"
        lab_status = subprocess.run(
            [*CORRAL, "sim", "status", "--state-dir", str(lab_dir), "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        vms = {n: v["vms"] for n, v in json.loads(lab_status.stdout)["nodes"].items()}
        assert sum(vm == "web1" for names in vms.values() for vm in names) == 1
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
        out = serve.stdout.read() if serve.stdout else ""
        assert token not in out  # logs never carry secrets
        assert '"stopped"' in out or "stopped" in out
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
        etcd.stop()
        subprocess.run(
            [*CORRAL, "sim", "down", "--state-dir", str(lab_dir)], capture_output=True, timeout=60
        )
