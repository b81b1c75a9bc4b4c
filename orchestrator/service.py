"""The orchestrator process (`corral serve`): loads the cluster state (latest
snapshot plus the events after it), keeps it current, serves the HTTP APIs, and
campaigns for leadership; while it leads it runs the reactors (nodes reached over
SSH with pinned host keys), saves checkpoints and audit seals periodically and
archives old events when an archive is configured; as a standby it serves reads
and accepts operator writes. Stops cleanly on SIGINT/SIGTERM, giving its lease up
so that a standby takes over at once.

Holds wiring only.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from events.election import Member
from events.etcd_client import EtcdCredentials
from events.etcd_versions import version_problem
from events.lifecycle.checkpoints import save_checkpoint
from events.lifecycle.retention import ArchiveRefused, RetentionPolicy, archive_pass
from events.lifecycle.seal_keys import SealSigner
from events.lifecycle.seals import seal_pending
from events.loading import load_state
from events.store import EventStore
from orchestrator.cluster_report import saved_rows
from reactors.context import ReactorSettings
from reactors.engine import Engine
from reactors.leader import Leadership
from reactors.nodes.fence_config import FencingConfig
from reactors.nodes.ssh_ops import SshNodeOps

if TYPE_CHECKING:
    from orchestrator.api.metrics import ControlView

log = structlog.get_logger("corral.service")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    etcd_endpoints: tuple[str, ...]
    cluster: str
    etcd_credentials: EtcdCredentials | None = None
    known_hosts: Path
    client_key: Path
    snapshot_every_s: float = 30.0
    settings: ReactorSettings = ReactorSettings()
    # The native API and dashboard (plain HTTP; put TLS in front of it) and the
    # Ganeti RAPI v2 (HTTPS). None: not served.
    api_listen: tuple[str, int] | None = None
    # Serve the native API over TLS with this certificate and key (else plain HTTP).
    api_tls: tuple[Path, Path] | None = None
    api_tokens: Path | None = None
    public_metrics: bool = False
    rapi_listen: tuple[str, int] | None = None
    rapi_users: Path | None = None
    rapi_cert_dir: Path | None = None
    rapi_anonymous_reads: bool = False
    # The Ed25519 key seals are signed with (on this host, never in etcd); None:
    # unsigned seals, for a lab only (docs/security.md).
    seal_signer: SealSigner | None = None
    # Which fence agents this host may run, their device addresses and secrets.
    fencing: FencingConfig = FencingConfig()
    # Where sealed segments of old events go before they leave etcd; None: the
    # log stays whole in etcd (and grows until etcd's quota).
    retention: RetentionPolicy | None = None
    archive_every_s: float = 600.0
    # This orchestrator's name among the cluster's (`corral cluster leader`);
    # "" = host name, process id and a random suffix.
    name: str = ""
    # How long one command on a node (a batch: per request) may take, and an SSH
    # connection may take to open or stay silent; raised for nodes without
    # hardware virtualisation (emulated node VMs).
    command_timeout_s: float = 30.0
    ssh_timeout_s: float = 5.0


async def run_service(
    config: ServiceConfig, *, ready: Callable[[Engine], Awaitable[None]] | None = None
) -> None:
    async with EventStore.connect(
        list(config.etcd_endpoints), config.cluster, credentials=config.etcd_credentials
    ) as store:
        problem = version_problem(store.server_version)
        if problem:
            log.warning("etcd may lose acknowledged events", etcd=store.endpoint, problem=problem)
        state = await load_state(store)
        log.info(
            "state loaded",
            cluster=config.cluster,
            revision=state.revision,
            nodes=len(state.desired.nodes),
            instances=len(state.desired.instances),
        )
        nodes = SshNodeOps(
            known_hosts=config.known_hosts,
            client_key=config.client_key,
            fencing=config.fencing,
            command_timeout_s=config.command_timeout_s,
            connect_timeout_s=config.ssh_timeout_s,
        )
        nodes.update_nodes(state.desired.nodes)
        api = f"{config.api_listen[0]}:{config.api_listen[1]}" if config.api_listen else ""
        leadership = Leadership.for_store(
            store, ttl_s=config.settings.lease_ttl_s, member=Member.here(api=api, name=config.name)
        )
        engine = Engine.build(
            log_store=store,
            nodes=nodes,
            state=state,
            settings=config.settings,
            leadership=leadership,
        )
        engine.ctx.on_event(lambda _e, st: nodes.update_nodes(st.desired.nodes))
        await engine.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        snapshots = asyncio.create_task(
            _snapshots(store, engine, config.snapshot_every_s, config.seal_signer)
        )
        archiving = (
            asyncio.create_task(_archiving(store, engine, config.retention, config.archive_every_s))
            if config.retention is not None
            else None
        )
        servers = await _start_servers(config, engine, store, nodes)
        if ready is not None:
            await ready(engine)
        try:
            await stop.wait()
        finally:
            for runner in servers:
                with contextlib.suppress(Exception):
                    await runner.cleanup()
            snapshots.cancel()
            if archiving is not None:
                archiving.cancel()
            await engine.stop()
            with contextlib.suppress(Exception):
                await save_checkpoint(store, engine.state)
            log.info("stopped", revision=engine.state.revision)


async def _start_servers(
    config: ServiceConfig, engine: Engine, store: EventStore, nodes: SshNodeOps
) -> list[Any]:
    """The HTTP servers the configuration asks for; their runners, to clean up."""
    runners: list[Any] = []
    if config.api_listen is not None:
        from orchestrator.api.auth import ApiAuth
        from orchestrator.api.metrics import ApiMetrics
        from orchestrator.api.server import start_api

        metrics = ApiMetrics()
        nodes.on_command = lambda n, c, d, ok: metrics.ssh.observe(
            node=n, command=c, duration_s=d, ok=ok
        )
        store.on_request = lambda op, d: metrics.etcd_seconds.labels(operation=op).observe(d)
        engine.on_reconcile = lambda d: metrics.reconcile_seconds.observe(d)
        engine.ctx.watch.on_lag = metrics.loop_lag.observe
        metrics.control = lambda: control_view(engine)
        engine.ctx.on_event(lambda e, _st: metrics.node_loss.on_event(e))

        auth = ApiAuth.from_file(config.api_tokens) if config.api_tokens else ApiAuth()
        host, port = config.api_listen
        runners.append(
            await start_api(
                host=host,
                port=port,
                state=lambda: engine.state,
                store=store,
                auth=auth,
                metrics=metrics,
                public_metrics=config.public_metrics,
                ssl_context=_api_tls(config.api_tls),
            )
        )
    if config.rapi_listen is not None:
        from orchestrator.rapi.server import start_rapi
        from orchestrator.rapi.users import RapiUsers

        users = RapiUsers.from_file(config.rapi_users) if config.rapi_users else RapiUsers({})
        host, port = config.rapi_listen
        runners.append(
            await start_rapi(
                host=host,
                port=port,
                state=lambda: engine.state,
                store=store,
                users=users,
                cert_dir=config.rapi_cert_dir or Path("rapi-cert"),
                anonymous_reads=config.rapi_anonymous_reads,
            )
        )
    return runners


def _api_tls(pair: tuple[Path, Path] | None) -> Any:
    if pair is None:
        return None
    from orchestrator.tls_cert import CertPaths, server_context

    return server_context(CertPaths(cert=pair[0], key=pair[1], created=False))


def control_view(engine: Engine) -> ControlView:
    from orchestrator.api.metrics import ControlView

    lead = engine.leadership
    known = lead.known_leader
    return ControlView(
        member=lead.member.id,
        leading=engine.leading,
        term=known.term if known else 0,
        leader=known.member.id if known else "",
        since=known.since if known else 0.0,
        standbys=sum(1 for m in lead.known_members if known is None or m.id != known.member.id),
        stalls=engine.ctx.watch.stalls,
    )


async def _snapshots(
    store: EventStore, engine: Engine, every: float, signer: SealSigner | None
) -> None:
    """While leading: checkpoint the folded state and seal (signed by `signer`)
    the events appended since the last seal (`corral audit verify` checks the
    seals), every `every` seconds."""
    last = engine.state.revision
    while True:
        await asyncio.sleep(every)
        if engine.leading and engine.state.revision != last:
            try:
                state = engine.state
                rows = await asyncio.to_thread(saved_rows, state, now=time.time())
                await save_checkpoint(store, state, views=rows)
                last = state.revision
                sealed = await seal_pending(store, signer=signer)
                if sealed:
                    log.info("sealed", seals=sealed, revision=last)
            except Exception:
                log.exception("checkpoint or seal failed")


async def _archiving(
    store: EventStore, engine: Engine, policy: RetentionPolicy, every: float
) -> None:
    """While leading: move old sealed events to the archive whenever enough have
    gathered."""
    while True:
        await asyncio.sleep(every)
        if not engine.leading:
            continue
        try:
            while await archive_pass(store, policy) is not None:
                pass
        except ArchiveRefused as exc:
            log.error("archiving refused", why=str(exc))
        except Exception:
            log.exception("archiving failed; trying again later")
