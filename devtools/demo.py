"""`make demo`: the whole story on one machine. Starts a private three-member etcd
and the seed lab (4 simulated nodes of 24 GiB / 730 GiB), runs three orchestrators
(`corral serve` processes "on" node1-node3, each beside an etcd member: one leads,
two stand by), declares the seed cluster (60 instances), shows them come up, then
crashes the leader's own node: its orchestrator and etcd member die with it, a
standby takes over, the node is fenced, its instances come back on their
secondaries and new secondaries sync. One timeline shows the handover beside the
heal phases. Leaves nothing running, also on Ctrl-C, SIGTERM or a closed terminal
(SIGHUP).

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

from devtools.demo_story import Follower, Handover, print_timeline, watch_handover
from devtools.local_etcd import LocalEtcdCluster
from devtools.orchestrators import ControlHost, ServeProcess, follow_power, serve_env
from events.election import LeaderRecord, read_leadership
from events.ids import InstanceName, NodeName
from events.loading import load_state
from events.specs import DiskSpec, InstanceSpec
from events.state import ClusterState
from events.store import EventStore
from orchestrator.heal_timeline import build_timeline
from orchestrator.logs import configure_logging
from reactors.plans.instance import plan_instance
from simulators.lab import Lab, seed_hosts

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "examples" / "seed-cluster.yaml"
# The demo's pace, set in its cluster file's policy (the orchestrators read it
# there) and on their command line: probes every 0.5 s, suspect after 1.5 s, lost
# after 4 s, the default 5 s leader lease (a shorter one hands over sooner, but on
# a busy machine a starved orchestrator loses it without any crash).
PROBE_INTERVAL_S = 0.5
SUSPECT_TIMEOUT = "1.5s"
LOST_TIMEOUT = "4s"
LEASE_TTL_S = 5
CONTROL_NODES = ("node1", "node2", "node3")


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


class _Stop:
    """A stop signal seen (`STOP_SIGNALS`): the demo's task is cancelled, and since
    Python 3.11's `asyncio.wait_for` can swallow a cancellation that lands as its
    inner call ends (a SIGHUP during the lab's start ran the whole demo to exit 0),
    the next line printed raises it again, once."""

    requested = False
    raised = False


def out(line: str = "") -> None:
    print(line, flush=True)
    if _Stop.requested and not _Stop.raised:
        _Stop.raised = True
        raise asyncio.CancelledError


def _stop(task: asyncio.Task[None]) -> None:
    _Stop.requested = True
    task.cancel()


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


async def wait_converged(engine: Follower, *, label: str, timeout: float) -> float:
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
    port become the simulated node's, and its fence agent the lab's power switch;
    the policy's timeouts are the demo's (quicker). The instances are the
    example's, unchanged."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    doc = yaml.load(example.read_text())
    doc["cluster"]["etcd"] = etcd_endpoint.split(",")
    doc["cluster"]["policy"]["suspect_timeout"] = SUSPECT_TIMEOUT
    doc["cluster"]["policy"]["lost_timeout"] = LOST_TIMEOUT
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
    try:
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if not limit or shown < limit:
                out("  " + line)
                shown += 1
            else:
                tail = [*tail, line][-4:]
    except asyncio.CancelledError:  # the demo is stopping: so does the command
        if proc.returncode is None:
            proc.kill()
        raise
    if tail:
        out("  ...")
        for line in tail:
            out("  " + line)
    return await proc.wait()


# The signals that end the demo as Ctrl-C does (its clean-up runs): `kill`, and
# the terminal it runs in being closed. etcd runs in a session of its own, so
# nothing else would stop it.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


async def wait_leader(store: EventStore, *, timeout: float = 60.0) -> LeaderRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader, _ = await read_leadership(store)
        if leader is not None:
            return leader
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no orchestrator leads after {timeout:.0f}s")


def control_hosts(workdir: Path, etcd: LocalEtcdCluster) -> list[ControlHost]:
    """`corral serve` on node1-node3, each beside the etcd member of the same number."""
    env = serve_env(etcd.client_env("orchestrator"), cluster="seed")
    args = (
        "--lab",
        str(workdir / "lab" / "inventory.json"),
        "--lease-ttl",
        str(LEASE_TTL_S),
        "--probe-interval",
        str(PROBE_INTERVAL_S),
    )
    return [
        ControlHost(
            node=node,
            orchestrator=ServeProcess(
                name=node, args=args, env=env, log_path=workdir / f"orchestrator-{node}.log"
            ),
            etcd=member,
        )
        for node, member in zip(CONTROL_NODES, etcd.members, strict=True)
    ]


async def crash_leader_node(
    store: EventStore, etcd: LocalEtcdCluster, lab: Lab, hosts: list[ControlHost], view: Follower
) -> tuple[str, Handover]:
    """Crash the node the leader runs on (its orchestrator and etcd member die
    with it); returns once a standby leads and has reconciled, and the node is
    fenced."""
    from devtools.orchestrators import first_reconcile_after

    old = await wait_leader(store)
    victim = old.member.id
    host = next(h for h in hosts if h.node == victim)
    # Watched through the etcd members that survive, so that the crash does not
    # blind the watch itself.
    survivors = [h.etcd.endpoint for h in hosts if h.etcd is not None and h is not host]
    async with EventStore.connect(
        survivors, "seed", credentials=etcd.credentials("auditor")
    ) as watcher:
        hit = sorted(n for n, p in view.state.placements.items() if p.primary == victim)
        sec = sorted(n for n, p in view.state.placements.items() if p.secondary == victim)
        out(
            f"\n-- crashing {victim}, the leader's node: its orchestrator and etcd member "
            f"die with it; {len(hit)} primaries and {len(sec)} secondaries on it --"
        )
        h = Handover(old=old, crashed_at=time.time())
        host.down()
        await lab.crash(victim)
        await watch_handover(watcher, h)
    others = [x.orchestrator for x in hosts if x is not host]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        first = first_reconcile_after(others, term=old.term)
        if first is not None:
            h.first_reconcile_at = first.at
            break
        await asyncio.sleep(0.1)
    assert h.new is not None
    out(
        f"  {h.new.member.id} took over (term {h.new.term}) "
        f"{h.new.since - h.crashed_at:.2f}s after the crash"
    )
    while True:
        obs = view.state.observed.get(NodeName(victim))
        if obs is not None and obs.health.value == "fenced":
            break
        await asyncio.sleep(0.1)
    return victim, h


async def demo(workdir: Path, *, stay: bool) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, _stop, task)
    out(
        "== corral demo: a 4-node seed cluster, 60 DRBD-mirrored VMs, three orchestrators; "
        "then the leader's own node dies =="
    )
    etcd = LocalEtcdCluster.create(workdir / "etcd", size=3, tls=True)
    lab: Lab | None = None
    hosts: list[ControlHost] = []
    background: list[asyncio.Task[None]] = []
    try:
        await asyncio.to_thread(etcd.start)
        out(f"etcd          : started on {etcd.endpoint} (data in {workdir / 'etcd'})")
        out(
            'etcd access   : three members (etcd1-3 "on" node1-3), TLS, client certificates '
            "(the CN is the etcd user), corral's etcd roles: the orchestrator, alice "
            "(operator, runs the commands below)"
        )
        lab = await Lab.start(
            hosts=seed_hosts(4), state_dir=workdir / "lab", sync_rate_mib_s=40_000
        )
        out(
            f"simulated lab : {len(lab.servers)} nodes, real SSH servers on ports "
            f"{', '.join(str(s.port) for s in lab.servers.values())}"
        )
        env = {**os.environ, **etcd.client_env("alice"), "CORRAL_CLUSTER": "seed"}
        hosts = control_hosts(workdir, etcd)
        for h in hosts:
            h.orchestrator.start()
        async with EventStore.connect(
            etcd.endpoints, "seed", credentials=etcd.credentials("orchestrator")
        ) as store:
            view = Follower(state=await load_state(store))
            background.append(asyncio.create_task(view.run(store)))
            lab_ = lab
            background.append(
                asyncio.create_task(follow_power(hosts, lambda n: lab_.host(n).powered))
            )
            leader = await wait_leader(store)
            out(
                f"orchestrators : corral serve on {', '.join(CONTROL_NODES)} (logs in "
                f"{workdir}/orchestrator-NODE.log); {leader.member.id} leads (term "
                f"{leader.term}), the others stand by; lease {LEASE_TTL_S}s, probe every "
                f"{PROBE_INTERVAL_S}s, lost after {LOST_TIMEOUT}"
            )
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
            out("")
            await corral("cluster", "leader", env=env)
            crash_rev = view.state.revision
            victim, handover = await crash_leader_node(store, etcd, lab, hosts, view)
            await wait_converged(view, label="healing", timeout=300)
            all_events = [x async for x in store.read_all()]
            tl = build_timeline(node=victim, crashed_at=handover.crashed_at, events=all_events)
            _, _, still = summary(view.state)
            ended = time.time() - handover.crashed_at
            reprotected = (
                f"re-protection ended  +{ended:6.2f}s  ({still} still degraded: no node can "
                "hold another copy, see above)"
                if still
                else f"all re-protected     +{ended:6.2f}s"
            )
            out(f"\ntimeline of the loss of {victim}, the leader's node (etcd and the event log):")
            print_timeline(out, node=victim, h=handover, tl=tl, reprotected=reprotected)
            hit = sorted(tl.started)
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
            out("")
            await corral("cluster", "leader", env=env)
            out("\nwhere to look next:")
            out("  corral status / corral instance list / corral events --follow")
            out("  docs/high-availability.md  three orchestrators and a three-member etcd")
            out("  docs/cli.md            every command, with its --json output")
            out("  docs/desired-state.md  the file format; deploy/examples/seed-cluster.yaml")
            out("  make test              the whole suite (real etcd, SSH, simulated nodes)")
            if stay or os.environ.get("CORRAL_DEMO_STAY"):
                await stay_running(
                    workdir=workdir,
                    etcd=etcd,
                    store=store,
                    view=view,
                    victim=victim,
                    cluster_file=cluster_file,
                    handover=handover,
                )
    finally:
        try:
            for t in background:
                t.cancel()
            await asyncio.gather(*(asyncio.to_thread(h.orchestrator.stop) for h in hosts))
            if lab is not None:
                (workdir / "lab" / "lab.pid").unlink(missing_ok=True)
                await lab.stop()
        finally:
            await asyncio.to_thread(etcd.stop)
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            out("\ndemo finished: etcd, the orchestrators and the simulated nodes are stopped.")


async def stay_running(
    *,
    workdir: Path,
    etcd: LocalEtcdCluster,
    store: EventStore,
    view: Follower,
    victim: str,
    cluster_file: Path,
    handover: Handover,
) -> None:
    """Keep the cluster up with the dashboard and both APIs, and say what to try."""
    from orchestrator.api.auth import ApiAuth, new_token_entry
    from orchestrator.api.server import start_api
    from orchestrator.rapi.server import start_rapi
    from orchestrator.rapi.users import RapiUsers
    from orchestrator.roles import Role

    token, entry = new_token_entry(name="demo", role=Role.ADMIN)
    api = await start_api(
        host="127.0.0.1",
        port=0,
        state=lambda: view.state,
        store=store,
        auth=ApiAuth(entries=(entry,)),
    )
    rapi = await start_rapi(
        host="127.0.0.1",
        port=0,
        state=lambda: view.state,
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
    # `corral sim` drives a lab by its state dir: the pid file marks this process
    # as the one running it, so the faults suggested below reach its lab (the
    # inventory names the control API); the orchestrator and etcd member "on" a
    # node go down and come back with the node's power.
    lab_dir = workdir / "lab"
    (lab_dir / "lab.pid").write_text(f"{os.getpid()}\n")
    leader = handover.new.member.id if handover.new is not None else "node2"
    out("\nThe cluster keeps running. In another terminal:")
    exports = " ".join(f"{k}={v}" for k, v in etcd.client_env("alice").items())
    out(f"  export {exports} CORRAL_CLUSTER=seed")
    out("  .venv/bin/corral status")
    out("  .venv/bin/corral cluster leader")
    out(f"  .venv/bin/corral sim power on {victim} --state-dir {lab_dir}")
    out(f"      ({victim} comes back: taken back, its orchestrator and etcd member rejoin)")
    out(f"  .venv/bin/corral sim fault crash {leader} --state-dir {lab_dir}")
    out(f"      (once {victim} is online again: the new leader's node dies, another handover)")
    out(f"  .venv/bin/corral plan -f {cluster_file}")
    out("Press Ctrl-C to stop everything.")
    await asyncio.Event().wait()


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
