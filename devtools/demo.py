"""`make demo`: the whole story on one machine. Starts a private etcd and the seed
lab (4 simulated nodes of 24 GiB / 730 GiB), runs the orchestrator, declares the
seed cluster (60 instances), shows them come up, crashes a node, and shows it
detected, fenced, its instances back on their secondaries and new secondaries
syncing, with a timestamp for each phase. Leaves nothing running, also on Ctrl-C,
SIGTERM or a closed terminal (SIGHUP).

Wiring only; the product never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from devtools.local_etcd import LocalEtcd
from events.ids import InstanceName, NodeName
from events.loading import load_state
from events.specs import DiskSpec, InstanceSpec
from events.state import ClusterState
from events.store import EventStore
from orchestrator.heal_timeline import build_timeline, percentile
from orchestrator.logs import configure_logging
from reactors.context import ReactorSettings
from reactors.engine import Engine
from reactors.leader import Leadership
from reactors.nodes.fence_config import FencingConfig
from reactors.nodes.ssh_ops import SshNodeOps
from reactors.plans.instance import plan_instance
from simulators.lab import Lab, seed_hosts

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "examples" / "seed-cluster.yaml"
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
        # Instances the allocator cannot give a new secondary (say, not enough disk
        # left on the surviving nodes) stay degraded with an alert: report them
        # rather than wait for what cannot happen.
        stuck = {
            a.subject.partition("/")[2]: a.message
            for a in engine.state.alerts.values()
            if a.alert.startswith("noredundancy:")
        }
        if stuck and running + len(stuck) >= total:
            for name, why in sorted(stuck.items()):
                out(f"  still degraded {name}: {why}")
            return time.monotonic() - started
        refused = engine.state.refusals
        if refused and placed + len(refused) == total and running == placed:
            for name, why in sorted(refused.items()):
                out(f"  refused {name}: {why}")
            raise RuntimeError(f"{label}: {len(refused)} instances cannot be placed")
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{label}: not converged in {timeout:.0f}s")


def lab_cluster_file(lab: Lab, *, example: Path, etcd_endpoint: str, out_path: Path) -> Path:
    """The example seed-cluster file, pointed at the lab: each node's SSH address and
    port become the simulated node's, and its fence agent the lab's power switch.
    The instances and the policy are the example's, unchanged."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    doc = yaml.load(example.read_text())
    doc["cluster"]["etcd"] = [etcd_endpoint]
    for node in doc["nodes"]:
        server = lab.servers[node["name"]]
        node["address"] = "127.0.0.1"
        node["port"] = server.port
        node.pop("replication_address", None)
        node["fence"] = {
            "agent": "fence_corral_sim",
            "options": {"ip": "127.0.0.1", "ipport": str(lab.control_port), "plug": node["name"]},
        }
    with out_path.open("w") as fh:
        yaml.dump(doc, fh)
    return out_path


async def corral(*args: str, env: dict[str, str], limit: int = 0) -> int:
    """Run the real `corral` command line, showing what it prints (the first
    `limit` lines and the last few, when `limit` is set)."""
    out(f"$ corral {' '.join(args)}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert proc.stdout is not None
    shown = 0
    tail: list[str] = []
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        if not limit or shown < limit:
            out("  " + line)
            shown += 1
        else:
            tail = [*tail, line][-4:]
    if tail:
        out("  ...")
        for line in tail:
            out("  " + line)
    return await proc.wait()


# The signals that end the demo as Ctrl-C does (its clean-up runs): `kill`, and
# the terminal it runs in being closed. etcd runs in a session of its own, so
# nothing else would stop it.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


async def demo(workdir: Path, *, stay: bool) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, task.cancel)
    out("== corral demo: a 4-node seed cluster, 60 DRBD-mirrored VMs, then a node dies ==")
    etcd = LocalEtcd(data_dir=workdir / "etcd", tls=True).start()
    lab: Lab | None = None
    engine: Engine | None = None
    try:
        out(f"etcd          : started on {etcd.endpoint} (data in {workdir / 'etcd'})")
        out(
            "etcd access   : TLS, client certificates (the CN is the etcd user), corral's "
            "etcd roles: the orchestrator, alice (operator, runs the commands below)"
        )
        lab = await Lab.start(
            hosts=seed_hosts(4), state_dir=workdir / "lab", sync_rate_mib_s=40_000
        )
        out(
            f"simulated lab : {len(lab.servers)} nodes, real SSH servers on ports "
            f"{', '.join(str(s.port) for s in lab.servers.values())}"
        )
        env = {
            **os.environ,
            **etcd.client_env("alice"),
            "CORRAL_CLUSTER": "seed",
        }
        async with EventStore.connect(
            [etcd.endpoint], "seed", credentials=etcd.credentials("orchestrator")
        ) as store:
            state = await load_state(store)
            nodes = SshNodeOps(
                fencing=FencingConfig.for_lab(),
                known_hosts=lab.known_hosts_path or Path(),
                client_key=lab.client_key_path or Path(),
            )
            engine = Engine.build(
                log_store=store,
                nodes=nodes,
                state=state,
                settings=SETTINGS,
                leadership=Leadership.for_store(store, ttl_s=SETTINGS.lease_ttl_s),
            )
            engine.ctx.on_event(lambda _e, st: nodes.update_nodes(st.desired.nodes))
            await engine.start()
            await engine.wait_leading()
            out("orchestrator  : reactors running (probe every 0.5s, lost after 4s)")
            cluster_file = lab_cluster_file(
                lab,
                example=EXAMPLE,
                etcd_endpoint=etcd.endpoint,
                out_path=workdir / "seed-cluster.yaml",
            )
            out(f"desired state : {EXAMPLE} pointed at the lab -> {cluster_file}\n")
            out("-- what would change? --")
            await corral("plan", "-f", str(cluster_file), env=env, limit=12)
            out("\n-- apply it and follow the work --")
            started = time.monotonic()
            rc = await corral(
                "apply", "-f", str(cluster_file), "--wait", "-m", "seed cluster", env=env, limit=8
            )
            if rc != 0:
                raise RuntimeError("apply did not converge")
            took = time.monotonic() - started
            out(f"\nall 60 instances running with both DRBD copies UpToDate in {took:.1f}s\n")
            await corral("status", env=env)
            victim = "node2"
            hit = sorted(n for n, p in engine.state.placements.items() if p.primary == victim)
            sec = sorted(n for n, p in engine.state.placements.items() if p.secondary == victim)
            out(f"\n-- crashing {victim}: {len(hit)} primaries and {len(sec)} secondaries on it --")
            crash_rev = engine.state.revision
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
            _, _, still = summary(engine.state)
            if still:
                out(
                    f"  re-protection ended  +{time.time() - crashed_at:6.2f}s  ({still} still "
                    "degraded: no node can hold another copy, see above)"
                )
            else:
                out(f"  all re-protected     +{time.time() - crashed_at:6.2f}s")
            if hit:
                out(f"\n-- the story of {hit[0]}, from the event log --")
                await corral(
                    "events",
                    "--object",
                    hit[0],
                    "--since",
                    str(crash_rev),
                    "--type",
                    "node.",
                    "--type",
                    "instance.",
                    "--type",
                    "step.succeeded",
                    env=env,
                    limit=20,
                )
            out("")
            await corral("status", env=env)
            out("\nwhere to look next:")
            out("  corral status / corral instance list / corral events --follow")
            out("  docs/cli.md            every command, with its --json output")
            out("  docs/desired-state.md  the file format; deploy/examples/seed-cluster.yaml")
            out("  make test              the whole suite (real etcd, SSH, simulated nodes)")
            if stay:
                from orchestrator.api.auth import ApiAuth, new_token_entry
                from orchestrator.api.server import start_api
                from orchestrator.rapi.server import start_rapi
                from orchestrator.rapi.users import RapiUsers
                from orchestrator.roles import Role

                token, entry = new_token_entry(name="demo", role=Role.ADMIN)
                running = engine
                api = await start_api(
                    host="127.0.0.1",
                    port=0,
                    state=lambda: running.state,
                    store=store,
                    auth=ApiAuth(entries=(entry,)),
                )
                rapi = await start_rapi(
                    host="127.0.0.1",
                    port=0,
                    state=lambda: running.state,
                    store=store,
                    users=RapiUsers({}),
                    cert_dir=workdir / "rapi",
                    anonymous_reads=True,  # a lab: htools read it as they read Ganeti
                )
                api_port, rapi_port = api.addresses[0][1], rapi.addresses[0][1]
                out(f"\ndashboard: http://127.0.0.1:{api_port}/  (token: {token})")
                out(f"API      : http://127.0.0.1:{api_port}/api/v1/openapi.json")
                out(
                    f"RAPI v2  : https://127.0.0.1:{rapi_port}/2/instances?bulk=1  "
                    f"(hbal -m https://127.0.0.1:{rapi_port})"
                )
                # `corral sim` drives a lab by its state dir: the pid file marks
                # this process as the one running it, so the fault the demo
                # suggests reaches its lab (the inventory names the control API).
                (workdir / "lab" / "lab.pid").write_text(f"{os.getpid()}\n")
                out("\nThe cluster keeps running. In another terminal:")
                exports = " ".join(f"{k}={v}" for k, v in etcd.client_env("alice").items())
                out(f"  export {exports} CORRAL_CLUSTER=seed")
                out("  .venv/bin/corral status")
                out(f"  .venv/bin/corral sim fault crash node3 --state-dir {workdir / 'lab'}")
                out(f"  .venv/bin/corral plan -f {cluster_file}")
                out("Press Ctrl-C to stop everything.")
                await asyncio.Event().wait()
    finally:
        try:
            if engine is not None:
                await engine.stop()
            if lab is not None:
                (workdir / "lab" / "lab.pid").unlink(missing_ok=True)
                await lab.stop()
        finally:
            etcd.stop()
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            out("\ndemo finished: etcd and the simulated nodes are stopped.")


def main() -> int:
    configure_logging(level="error")
    workdir = Path(tempfile.mkdtemp(prefix="corral-demo-"))
    try:
        asyncio.run(demo(workdir, stay=sys.stdin.isatty() and not os.environ.get("CI")))
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started has been stopped.", file=sys.stderr)
        return 130
    except asyncio.CancelledError:  # SIGTERM or SIGHUP (`STOP_SIGNALS`)
        with contextlib.suppress(OSError):  # a closed terminal
            print("\nstopped: everything the demo started has been stopped.", file=sys.stderr)
        return 143
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
