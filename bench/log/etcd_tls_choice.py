"""How corral should speak TLS to etcd, measured (docs/security.md quotes it; not
in the default `make bench` list): the event store's figures on one etcd with TLS,
client certificates and corral's roles, reached (a) directly over aetcd with a TLS
channel (`events.etcd_client.TlsClient`, what corral does) and (b) in plaintext
through etcd's own `grpc-proxy` on loopback holding the TLS connection, beside (c)
a plaintext etcd without auth. Run: `.venv/bin/python -m bench etcd_tls_choice`.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aetcd

from bench.log.event_store import _store_figures, connector
from devtools.local_etcd import LocalEtcd, find_etcd_binary, free_port
from events.etcd_client import TlsClient
from events.store import EventStore

KEYS = (
    "appends_per_s_one_at_a_time",
    "appends_per_s_batched",
    "read_all_s",
    "watch_events_per_s",
)


def _proxy(etcd: LocalEtcd, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """etcd's grpc-proxy on loopback, holding a TLS connection to `etcd` with a
    certificate without CN (the proxy refuses one with a CN: etcd would take it
    as the user of every request passing through)."""
    assert etcd.pki is not None
    creds = etcd.pki.issue("proxy", cn=None)
    assert creds.cert is not None and creds.key is not None
    port, metrics = free_port(), free_port()
    proc = subprocess.Popen(
        [
            find_etcd_binary(),
            "grpc-proxy",
            "start",
            f"--endpoints=127.0.0.1:{etcd.client_port}",
            f"--listen-addr=127.0.0.1:{port}",
            f"--metrics-addr=http://127.0.0.1:{metrics}",
            f"--cacert={creds.ca}",
            f"--cert={creds.cert}",
            f"--key={creds.key}",
        ],
        stdout=(tmp / "proxy.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/health", timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"grpc-proxy did not start: {(tmp / 'proxy.log').read_text()[-2000:]}")


PASSWORD = "bench-only-password"


async def _password_user(etcd: LocalEtcd) -> None:
    """A password user with the orchestrator's role: through the proxy a client
    can only authenticate by name and password (a simple token)."""
    from aetcd import rpc

    root = etcd.credentials("root")
    assert root is not None
    client = TlsClient(host="127.0.0.1", port=etcd.client_port, credentials=root, timeout=10)
    await client.connect()
    try:
        stub = rpc.AuthStub(client.channel)
        await stub.UserAdd(rpc.AuthUserAddRequest(name="benchpw", password=PASSWORD))
        await stub.UserGrantRole(
            rpc.AuthUserGrantRoleRequest(user="benchpw", role="corral-orchestrator")
        )
    finally:
        await client.close()


def _via_proxy(url: str) -> Callable[[], contextlib.AbstractAsyncContextManager[EventStore]]:
    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[EventStore]:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        client = aetcd.Client(
            host=host, port=int(port), username="benchpw", password=PASSWORD, timeout=10
        )
        await client.connect()
        try:
            yield EventStore(client=client, cluster="bench", endpoint=url, identity="benchpw")
        finally:
            await client.close()

    return connect


def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plain = LocalEtcd(data_dir=tmp / "plain").start()
        try:
            out["plaintext"] = asyncio.run(_store_figures(connector(plain.endpoint, None)))
        finally:
            plain.stop()
        secure = LocalEtcd(data_dir=tmp / "tls", tls=True).start()
        try:
            out["tls_direct"] = asyncio.run(
                _store_figures(connector(secure.endpoint, secure.credentials("orchestrator")))
            )
            asyncio.run(_password_user(secure))
            proxy, url = _proxy(secure, tmp)
            try:
                out["tls_via_grpc_proxy"] = asyncio.run(_store_figures(_via_proxy(url)))
            finally:
                proxy.terminate()
                proxy.wait(timeout=10)
        finally:
            secure.stop()
    out["table"] = [
        ["measure", "plaintext", "TLS direct", "TLS via grpc-proxy"],
        *[
            [k, out["plaintext"][k], out["tls_direct"][k], out["tls_via_grpc_proxy"][k]]
            for k in KEYS
        ],
    ]
    return out
