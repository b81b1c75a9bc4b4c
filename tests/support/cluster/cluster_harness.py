"""A whole corral for tests: a private etcd, a lab of simulated hosts reached over
real SSH, the event store and the reactor engine, with helpers to declare nodes and
instances and to wait for convergence. Assertions look at the simulated hosts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from devtools.local_etcd import LocalEtcd, LocalEtcdCluster
from events.election import Member
from events.ids import InstanceName, JobId, NodeName, new_event_id
from events.model import JOB_FINAL_STATUSES, Event, InstanceDeclared, NodeDeclared, PolicySet
from events.specs import ClusterPolicy, DiskSpec, FenceSpec, InstanceSpec, NodeSpec
from events.state import ClusterState
from events.store import EventStore
from reactors.context import ReactorSettings
from reactors.engine import Engine
from reactors.leader import Leadership
from reactors.nodes.fence_config import FencingConfig
from reactors.nodes.ssh_ops import SshNodeOps
from reactors.plans.instance import plan_instance
from simulators.lab import HostConfig, Lab

FAST = ReactorSettings(
    probe_interval_s=0.2,
    resync_interval_s=1.0,
    suspect_timeout_s=0.8,
    lost_timeout_s=2.0,
    fence_retry_max_s=1.0,
    lease_ttl_s=5,
)


eid = new_event_id  # the tests' short name for it


@dataclass
class Cluster:
    etcd: LocalEtcd | LocalEtcdCluster
    lab: Lab
    store: EventStore
    engine: Engine | None
    settings: ReactorSettings
    tmp: Path
    # Further orchestrators' engines (`new_engine` + start), stopped at the end.
    others: list[Engine] = field(default_factory=list)

    async def corral(self, *args: str, identity: str = "alice") -> subprocess.CompletedProcess[str]:
        """Run the real `corral` command line against this cluster's etcd, as the
        etcd identity `identity` (an operator unless told otherwise)."""
        env = {**os.environ, **self.etcd.client_env(identity), "CORRAL_CLUSTER": "lab"}
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "orchestrator.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    async def declare(self, events: list[Event]) -> int:
        return await self.store.append(events)

    def node_specs(self, *, fence: bool = True) -> list[NodeSpec]:
        specs = []
        for name, server in self.lab.servers.items():
            host = server.host
            specs.append(
                NodeSpec(
                    name=NodeName(name),
                    address="127.0.0.1",
                    port=server.port,
                    memory_mib=host.memory_mib,
                    disk_mib=host.vg_size_mib,
                    cpus=host.cpus,
                    host_memory_mib=512,
                    fence=FenceSpec(
                        agent="fence_corral_sim",
                        options=(
                            ("ip", "127.0.0.1"),
                            ("ipport", str(self.lab.control_port)),
                            ("plug", name),
                        ),
                    )
                    if fence
                    else None,
                )
            )
        return specs

    async def declare_nodes(
        self, *, policy: ClusterPolicy | None = None, fence: bool = True
    ) -> None:
        events: list[Event] = [
            PolicySet(
                id=eid(),
                time=time.time(),
                actor="test",
                cluster_name="lab",
                policy=policy or ClusterPolicy(),
            )
        ]
        events += [
            NodeDeclared(id=eid(), time=time.time(), actor="test", spec=s)
            for s in self.node_specs(fence=fence)
        ]
        await self.declare(events)

    async def declare_instances(self, specs: list[InstanceSpec]) -> None:
        for i in range(0, len(specs), 50):
            await self.declare(
                [
                    InstanceDeclared(id=eid(), time=time.time(), actor="test", spec=s)
                    for s in specs[i : i + 50]
                ]
            )

    async def start_engine(self, *, name: str = "", lead: bool = True) -> Engine:
        """An orchestrator's engine on this cluster (its own lease, campaigning);
        with `lead`, returns once it leads."""
        engine = await self.new_engine(name=name)
        await engine.start()
        self.engine = engine
        if lead:
            await engine.wait_leading(timeout=30)
        return engine

    async def new_engine(self, *, name: str = "") -> Engine:
        from events.loading import load_state

        state = await load_state(self.store)
        nodes = SshNodeOps(
            fencing=FencingConfig.for_lab(),
            known_hosts=self.lab.known_hosts_path,  # type: ignore[arg-type]
            client_key=self.lab.client_key_path,  # type: ignore[arg-type]
            command_timeout_s=10,
            connect_timeout_s=2,
        )
        nodes.update_nodes(state.desired.nodes)
        leadership = Leadership.for_store(
            self.store, ttl_s=self.settings.lease_ttl_s, member=Member.here(name=name)
        )
        engine = Engine.build(
            log_store=self.store,
            nodes=nodes,
            state=state,
            settings=self.settings,
            leadership=leadership,
        )
        engine.ctx.on_event(lambda _e, st: nodes.update_nodes(st.desired.nodes))
        return engine

    async def stop_engine(self, *, hard: bool = False) -> None:
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None

    async def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.explain()}")

    def explain(self) -> str:
        """Node health and every unconverged instance's plan, for failure messages."""
        if self.engine is None:
            return "(engine not running)"
        state = self.engine.state
        lines = [
            f"{n}: {o.health.value} {o.health_detail}" for n, o in sorted(state.observed.items())
        ]
        for name in sorted(set(state.desired.instances) | set(state.placements)):
            plan = plan_instance(state=state, instance=name, now=time.time())
            if not plan.converged:
                p = state.placements.get(name)
                last = state.last_steps.get(f"instance/{name}")
                lines.append(
                    f"{name} {p.primary if p else '-'}/{p.secondary if p else '-'}: "
                    f"steps={[s.summary for s in plan.steps]} waiting={list(plan.waiting)} "
                    f"last={last}"
                )
        lines += [f"alert {a.alert}: {a.message}" for a in state.alerts.values()]
        return "\n".join(lines[:60])

    def converged(self, names: list[InstanceName] | None = None) -> bool:
        assert self.engine is not None
        state = self.engine.state
        names = names or sorted(state.desired.instances)
        return all(plan_instance(state=state, instance=n, now=time.time()).converged for n in names)

    # what the simulated hosts themselves say
    def running_on(self, instance: str) -> list[str]:
        return sorted(
            h.name
            for h in self.lab.fabric.hosts.values()
            if h.powered and instance in h.vms and h.vms[instance].status == "running"
        )

    def primaries(self, resource: str) -> list[str]:
        return sorted(
            h.name
            for h in self.lab.fabric.hosts.values()
            if h.powered
            and resource in h.copies
            and h.copies[resource].up
            and h.copies[resource].role == "Primary"
        )


def job_ended(state: ClusterState, job_id: JobId) -> bool:
    """Whether the job has ended. A job just submitted may not be folded into this
    state yet (the engine folds what it reads back from etcd; a standby follows
    later still): that is "not yet", not an error."""
    job = state.jobs.get(job_id)
    return job is not None and job.status in JOB_FINAL_STATUSES


def instances(
    n: int, *, memory: tuple[int, ...] = (512, 1024, 2048), disk_gib: tuple[int, ...] = (10, 20)
) -> list[InstanceSpec]:
    return [
        InstanceSpec(
            name=InstanceName(f"vm{i:03d}"),
            memory_mib=memory[i % len(memory)],
            vcpus=1 + i % 2,
            disks=(DiskSpec(size_mib=disk_gib[i % len(disk_gib)] * 1024),),
        )
        for i in range(n)
    ]


def _start_etcd(tmp: Path, members: int) -> LocalEtcd | LocalEtcdCluster:
    """A fresh etcd on free ports; a cluster is started again on other ports when
    one it picked was taken meanwhile (a lone member does that itself)."""
    if members == 1:
        return LocalEtcd(data_dir=tmp / "etcd", tls=True).start()
    for attempt in range(3):
        base = tmp / ("etcd" if attempt == 0 else f"etcd-{attempt}")
        try:
            return LocalEtcdCluster.create(base, size=members, tls=True).start()
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@asynccontextmanager
async def cluster(
    tmp: Path,
    *,
    hosts: list[HostConfig] | None = None,
    settings: ReactorSettings = FAST,
    sync_rate_mib_s: float = 200_000,
    etcd_members: int = 1,
) -> AsyncIterator[Cluster]:
    etcd = _start_etcd(tmp, etcd_members)
    lab = await Lab.start(
        hosts=hosts or [HostConfig(name=f"node{i}") for i in range(1, 5)],
        state_dir=tmp / "lab",
        sync_rate_mib_s=sync_rate_mib_s,
    )
    try:
        async with EventStore.connect(
            etcd.endpoint.split(","), "lab", credentials=etcd.credentials()
        ) as store:
            c = Cluster(etcd=etcd, lab=lab, store=store, engine=None, settings=settings, tmp=tmp)
            try:
                yield c
            finally:
                await c.stop_engine()
                for other in c.others:
                    await other.stop()
    finally:
        await lab.stop()
        etcd.stop()
