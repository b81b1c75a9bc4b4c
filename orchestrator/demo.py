"""`make demo`: the whole story on one machine. Starts a private etcd and the seed
lab (4 simulated nodes of 24 GiB / 730 GiB), runs the orchestrator, declares the
seed cluster (60 instances), shows them come up, crashes a node, and shows it
detected, fenced, its instances back on their secondaries and new secondaries
syncing, with a timestamp for each phase. Leaves nothing running, also on Ctrl-C.

Wiring only: comes after everything else in the repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from events.ids import InstanceName, NodeName
from events.model import Event, InstanceDeclared, NodeDeclared, PolicySet
from events.specs import ClusterPolicy, DiskSpec, FenceSpec, InstanceSpec, NodeSpec
from events.state import ClusterState
from events.store import EventStore
from orchestrator.heal_timeline import build_timeline, percentile
from orchestrator.local_etcd import LocalEtcd
from orchestrator.logs import configure_logging
from orchestrator.operations import new_event_id
from orchestrator.service import load_state
from reactors.context import ReactorSettings
from reactors.engine import Engine
from reactors.instance_plan import plan_instance
from reactors.node_ops import SshNodeOps
from simulators.lab import Lab, seed_hosts

SETTINGS = ReactorSettings(
    actor="reactor",
    probe_interval_s=0.5,
    resync_interval_s=2.0,
    suspect_timeout_s=1.5,
    lost_timeout_s=4.0,
)


def seed_instances() -> list[InstanceSpec]:
    """60 instances, 512 MiB-4 GiB and 10-40 GiB: the seed cluster's load."""
    memory = [4096] + [2048] * 2 + [1024] * 6 + [512] * 11  # 58.5 GiB in all
    disks = (10, 20, 10, 40, 10, 20, 30, 10, 20, 10)
    specs = []
    for i in range(60):
        tags = frozenset({"service:dns"}) if i in (0, 1) else frozenset()
        specs.append(
            InstanceSpec(
                name=InstanceName(f"vm{i + 1:02d}"),
                memory_mib=memory[i % len(memory)],
                vcpus=1 + (i % 3 == 0),
                disks=(DiskSpec(size_mib=disks[i % 10] * 1024),),
                tags=tags,
            )
        )
    return specs


def node_specs(lab: Lab) -> list[NodeSpec]:
    return [
        NodeSpec(
            name=NodeName(name),
            address="127.0.0.1",
            port=server.port,
            memory_mib=server.host.memory_mib,
            disk_mib=server.host.vg_size_mib,
            cpus=server.host.cpus,
            host_memory_mib=1024,
            fence=FenceSpec(
                agent="fence_corral_sim",
                options=(("ip", "127.0.0.1"), ("ipport", str(lab.control_port)), ("plug", name)),
            ),
        )
        for name, server in lab.servers.items()
    ]


def out(line: str = "") -> None:
    print(line, flush=True)


def summary(state: ClusterState) -> tuple[int, int, int]:
    now = time.time()
    placed = len(state.placements)
    running = degraded = 0
    for name in state.desired.instances:
        plan = plan_instance(state=state, instance=name, now=now)
        if plan.converged:
            running += 1
        if plan.degraded:
            degraded += 1
    return placed, running, degraded


def node_table(state: ClusterState) -> None:
    out(f"  {'node':<8} {'health':<10} {'primaries':>9} {'secondaries':>11} {'mem used':>10}")
    for name, spec in sorted(state.desired.nodes.items()):
        obs = state.observed.get(name)
        prim = [n for n, p in state.placements.items() if p.primary == name]
        sec = [n for n, p in state.placements.items() if p.secondary == name]
        mem = sum(
            state.desired.instances[n].memory_mib for n in prim if n in state.desired.instances
        )
        health = obs.health.value if obs else "unknown"
        out(
            f"  {name:<8} {health:<10} {len(prim):>9} {len(sec):>11} {mem:>7} MiB"
            f" / {spec.memory_mib - spec.host_memory_mib}"
        )


async def wait_converged(engine: Engine, *, label: str, timeout: float) -> float:
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout:
        placed, running, degraded = summary(engine.state)
        total = len(engine.state.desired.instances)
        line = (
            f"  {label}: placed {placed}/{total}, running+in sync {running}/{total}, "
            f"degraded {degraded}"
        )
        if line != last:
            out(f"  [{time.monotonic() - started:5.1f}s]{line[1:]}")
            last = line
        if running == total:
            return time.monotonic() - started
        refused = engine.state.refusals
        if refused and placed + len(refused) == total and running == placed:
            for name, why in sorted(refused.items()):
                out(f"  refused {name}: {why}")
            raise RuntimeError(f"{label}: {len(refused)} instances cannot be placed")
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{label}: not converged in {timeout:.0f}s")


async def demo(workdir: Path) -> None:
    out("== corral demo: a 4-node seed cluster, 60 DRBD-mirrored VMs, then a node dies ==")
    etcd = LocalEtcd(data_dir=workdir / "etcd").start()
    out(f"etcd          : started on {etcd.endpoint} (data in {workdir / 'etcd'})")
    lab = await Lab.start(hosts=seed_hosts(4), state_dir=workdir / "lab", sync_rate_mib_s=40_000)
    out(
        f"simulated lab : {len(lab.servers)} nodes, real SSH servers on ports "
        f"{', '.join(str(s.port) for s in lab.servers.values())}"
    )
    engine: Engine | None = None
    try:
        async with EventStore.connect([etcd.endpoint], "seed") as store:
            events: list[Event] = [
                PolicySet(
                    id=new_event_id(),
                    time=time.time(),
                    actor="demo",
                    cluster_name="seed",
                    policy=ClusterPolicy(exclusion_tag_prefixes=("service:",)),
                    reason="seed cluster policy",
                )
            ]
            events += [
                NodeDeclared(id=new_event_id(), time=time.time(), actor="demo", spec=s)
                for s in node_specs(lab)
            ]
            events += [
                InstanceDeclared(id=new_event_id(), time=time.time(), actor="demo", spec=s)
                for s in seed_instances()
            ]
            for i in range(0, len(events), 40):
                await store.append(events[i : i + 40])
            out(f"desired state : 4 nodes and 60 instances recorded in etcd ({len(events)} events)")
            state = await load_state(store)
            nodes = SshNodeOps(
                known_hosts=lab.known_hosts_path or Path(), client_key=lab.client_key_path or Path()
            )
            nodes.update_nodes(state.desired.nodes)
            engine = Engine.build(log_store=store, nodes=nodes, state=state, settings=SETTINGS)
            await engine.start()
            out("orchestrator  : reactors running (probe every 0.5s, lost after 4s)\n")
            out("-- bringing the cluster up --")
            took = await wait_converged(engine, label="up", timeout=300)
            out(f"\nall 60 instances running with both DRBD copies UpToDate in {took:.1f}s")
            node_table(engine.state)
            victim = "node2"
            hit = sorted(n for n, p in engine.state.placements.items() if p.primary == victim)
            sec = sorted(n for n, p in engine.state.placements.items() if p.secondary == victim)
            out(f"\n-- crashing {victim}: {len(hit)} primaries and {len(sec)} secondaries on it --")
            crashed_at = time.time()
            await lab.crash(victim)
            while True:
                obs = engine.state.observed.get(NodeName(victim))
                if obs is not None and obs.health.value == "fenced":
                    break
                await asyncio.sleep(0.1)
            took = await wait_converged(engine, label="healing", timeout=300)
            all_events = [x async for x in store.read_all()]
            tl = build_timeline(node=victim, crashed_at=crashed_at, events=all_events)
            back = tl.back_times()
            out(f"\nnode loss timeline for {victim} (from the event log):")
            out(f"  suspected            {tl.rel(tl.suspect_at)}")
            out(f"  declared lost        {tl.rel(tl.lost_at)}  (its DRBD peers lost it too)")
            out(f"  fenced (agent off)   {tl.rel(tl.fenced_at)}")
            if back:
                out(f"  first instance back  +{back[0]:6.2f}s")
                out(
                    f"  last instance back   +{back[-1]:6.2f}s  ({len(back)} instances, "
                    f"p50 {percentile(back, 50):.2f}s)"
                )
            if tl.reprotected:
                last = max(tl.reprotected.values())
                out(f"  new secondaries      {tl.rel(last)}  ({len(tl.reprotected)} decided)")
            out(f"  all re-protected     +{took + (time.time() - crashed_at - took):6.2f}s")
            node_table(engine.state)
            example = hit[0] if hit else None
            if example:
                out(f"\nthe log for {example} since the crash:")
                for rev, e in all_events:
                    if (
                        e.time >= crashed_at
                        and (
                            f"instance/{example}" in e.objects() or f"node/{victim}" in e.objects()
                        )
                        and e.TYPE not in ("node.observed", "step.started")
                    ):
                        detail = (
                            getattr(e, "step", "")
                            or getattr(e, "health", "")
                            or getattr(e, "kind", "")
                        )
                        out(
                            f"  rev {rev:>5} +{e.time - crashed_at:5.2f}s {e.TYPE:<18} "
                            f"{detail!s:<14} "
                            f"{e.actor:<8} {e.reason[:60]}"
                        )
            out("\nwhere to look next:")
            out("  make test             the whole suite (real etcd, SSH, simulated nodes)")
            out("  docs/architecture.md  how the reactors and the safety rules fit together")
    finally:
        if engine is not None:
            await engine.stop()
        await lab.stop()
        etcd.stop()
        out("\ndemo finished: etcd and the simulated nodes are stopped.")


def main() -> int:
    configure_logging(level="error")
    workdir = Path(tempfile.mkdtemp(prefix="corral-demo-"))
    try:
        asyncio.run(demo(workdir))
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started has been stopped.", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
