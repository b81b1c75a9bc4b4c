"""`reactors.balance.cores.plan_on_cores`: the balancer's searches spread over
worker processes give `plan_balance`'s plan, figure for figure, whatever the
number of cores; a worker that dies mid-search is replaced by the same search
run in the calling process, and the plan is still the same; when planning
fails in the calling process, or that process is killed, no worker is left
running; and when it returns, its workers and the pool's thread are gone.

Real worker processes (spawned interpreters), real clusters from
`tests.support.states.generated.generated_cluster`; a worker or the planning process is
killed with SIGKILL, as the kernel's OOM killer would, and whether a process is
left is read from /proc.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reactors.balance.cores import MIN_PARALLEL_WORK, CoresPlan, plan_on_cores
from reactors.balance.moves import BalancePlan
from reactors.balance.plan import plan_balance
from reactors.htools.model import BCluster
from reactors.htools.text import render
from tests.support.states.generated import generated_cluster

_MEMORY = (512, 1024, 1024, 2048, 4096)
_CORRAL = (sys.executable, "-m", "orchestrator.cli.main")


def _sixteen_nodes() -> BCluster:
    """16 nodes, 200 instances: big enough that its searches go to workers."""
    return generated_cluster(seed=3, full=13, empty=3, instances=200)


def test_the_plan_is_plan_balance_s_on_any_number_of_cores() -> None:
    start = _sixteen_nodes()
    assert len(start.instances) * len(start.nodes) >= MIN_PARALLEL_WORK
    alone = plan_balance(cluster=start)
    assert len(alone.dropped) >= 3  # the four searches ran, and one was kept
    assert alone.searches == "full"
    one = plan_on_cores(cluster=start, cores=1)
    two = plan_on_cores(cluster=start, cores=2)
    # the lookahead search ran in a worker on two cores
    assert [p.in_workers for p in (one, two)] == [0, 1]
    assert one.plan == alone and two.plan == alone
    assert two.weighed_in_workers == 0  # (kept by "budget": nothing shared)
    # whether the worker is forked or spawned, the same plan (`two` was
    # started the way this process starts them; the other way here)
    assert two.started_by in ("fork", "spawn")
    other = "spawn" if two.started_by == "fork" else "fork"
    started = plan_on_cores(cluster=start, cores=2, start=other)
    assert started.started_by == other and started.in_workers == 1
    assert started.plan == alone
    greedy = plan_on_cores(cluster=start, cores=2, lookahead=0)
    assert greedy.in_workers == 0
    assert greedy.plan == plan_balance(cluster=start, lookahead=0)
    # a small cluster plans here when the worker would be spawned (it would
    # cost more than it saves), and with a forked one (milliseconds) there
    small = generated_cluster(seed=9, full=6, empty=2, instances=60)
    assert len(small.instances) * len(small.nodes) < MIN_PARALLEL_WORK
    planned = plan_on_cores(cluster=small, cores=2, start="spawn")
    assert planned.in_workers == 0 and planned.started_by is None
    assert planned.plan == plan_balance(cluster=small)
    forked = plan_on_cores(cluster=small, cores=2, start="fork")
    assert forked.in_workers == 1 and forked.started_by == "fork"
    assert forked.plan == planned.plan


@pytest.mark.slow  # ten more plans of the 16-node cluster: `make bench`
def test_more_cores_preferences_and_search_sets_give_plan_balance_s_plan() -> None:
    start = _sixteen_nodes()
    alone = plan_balance(cluster=start)
    three = plan_on_cores(cluster=start, cores=3)
    four = plan_on_cores(cluster=start, cores=4)
    # the pairs search too in a worker on three cores, and the frugal one on four
    assert [p.in_workers for p in (three, four)] == [2, 3]
    assert three.plan == alone and four.plan == alone
    # kept by "moves", the searches in workers stop at the greedy score once
    # it is shared, wherever they have got to: the same plan
    short = plan_balance(cluster=start, prefer="moves")
    for n in (2, 3):
        stopping = plan_on_cores(cluster=start, cores=n, prefer="moves")
        assert stopping.plan == short
        # the lookahead search (three times the greedy one's work) learnt the
        # greedy score long before its end, stopped there and was weighed there
        assert stopping.weighed_in_workers >= 1
    low = plan_on_cores(cluster=start, cores=2, prefer="score")
    assert low.in_workers == 1
    assert low.plan == plan_balance(cluster=start, prefer="score")
    # the quick set: the frugal search in a worker beside the greedy one here
    quick = plan_on_cores(cluster=start, cores=2, search_set="quick")
    assert quick.in_workers == 1 and quick.plan.searches == "quick"
    assert quick.plan == plan_balance(cluster=start, search_set="quick")


def _spawned_children(parent: int | None = None) -> list[int]:
    """The children of `parent` (default: this process) that are
    multiprocessing's workers: spawned ones run `spawn_main`, forked ones the
    parent's own command line."""
    parent = os.getpid() if parent is None else parent
    try:
        own = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and (b"spawn_main" in cmdline or cmdline == own):
            found.append(int(entry.name))
    return found


@functools.cache
def _bench_cluster_plan() -> BalancePlan:
    """The full set's plan of the 16-node bench cluster, planned here once for
    both start methods' tests."""
    start = generated_cluster(seed=13, full=13, empty=3, instances=520, memory=_MEMORY)
    return plan_balance(cluster=start, search_set="full")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_worker_killed_mid_search_is_replaced_by_the_same_search_here(method: str) -> None:
    # the 16-node bench cluster: with the full set its lookahead search takes
    # seconds in the worker
    start = generated_cluster(seed=13, full=13, empty=3, instances=520, memory=_MEMORY)
    out: list[CoresPlan] = []
    runner = threading.Thread(
        target=lambda: out.append(
            plan_on_cores(cluster=start, cores=2, start=method, search_set="full")
        )
    )
    runner.start()
    deadline = time.monotonic() + 20
    killed: list[int] = []
    while not killed and time.monotonic() < deadline and runner.is_alive():
        children = _spawned_children()
        if children:
            time.sleep(0.5)  # let it start the search
            for pid in children:
                os.kill(pid, signal.SIGKILL)
            killed = children
        time.sleep(0.05)
    runner.join(timeout=120)
    assert killed, "no worker process was seen"
    assert not runner.is_alive() and out
    planned = out[0]
    assert planned.in_workers == 0  # the killed worker's search ran here instead
    assert planned.plan == _bench_cluster_plan()


# Run as a script: plans the 16-node bench cluster on two cores and, once the
# lookahead search is under way in its worker, interrupts the planning here
# (as an error in this process's own search would); prints what was raised and
# which of the worker processes seen are still there after it.
_INTERRUPTED = """
import json, os, signal, sys, threading, time
METHOD = sys.argv[1]
from reactors.balance.cores import plan_on_cores
from tests.support.states.generated import generated_cluster
from tests.unit.balance.test_balance_cores import _MEMORY, _spawned_children

start = generated_cluster(seed=13, full=13, empty=3, instances=520, memory=_MEMORY)
seen = []

def interrupt(signum, frame):
    raise RuntimeError("interrupted")

def watch():
    deadline = time.monotonic() + 20
    while not seen and time.monotonic() < deadline:
        seen.extend(_spawned_children())
        time.sleep(0.05)
    time.sleep(0.5)  # let it start the search
    os.kill(os.getpid(), signal.SIGUSR1)

signal.signal(signal.SIGUSR1, interrupt)
threading.Thread(target=watch, daemon=True).start()
try:
    plan_on_cores(cluster=start, cores=2, start=METHOD, search_set="full")
    raised = None
except RuntimeError as error:
    raised = str(error)
left = [pid for pid in seen if os.path.exists(f"/proc/{pid}")]
print(json.dumps({"raised": raised, "seen": seen, "left": left}))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_an_error_here_stops_the_worker_before_it_is_raised(method: str) -> None:
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED, method],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["seen"], "no worker process was seen"
    assert report["raised"] == "interrupted"
    # the lookahead search still had seconds to go: without being stopped, its
    # worker would still be running when the error reached the caller
    assert report["left"] == []


_PLAN_16_NODES = """
import sys
from reactors.balance.cores import plan_on_cores
from tests.support.states.generated import generated_cluster
from tests.unit.balance.test_balance_cores import _MEMORY
start = generated_cluster(seed=13, full=13, empty=3, instances=520, memory=_MEMORY)
plan_on_cores(cluster=start, cores=2, start=sys.argv[1], search_set="full")
"""


def _running(pid: int) -> bool:
    """Whether the process is there and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_worker_ends_when_the_planning_process_is_killed(method: str) -> None:
    # SIGKILL (as the OOM killer, or a SIGTERM with no handler) runs none of the
    # planning process's clean-up: the worker must end by itself. Before it did,
    # it finished its search and then waited for work forever.
    root = Path(__file__).resolve().parents[3]
    planner = subprocess.Popen(
        [sys.executable, "-c", _PLAN_16_NODES, method], cwd=root, stderr=subprocess.DEVNULL
    )
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 20
        while not workers and time.monotonic() < deadline and planner.poll() is None:
            workers = _spawned_children(planner.pid)
            time.sleep(0.05)
        assert workers, "no worker process was seen"
        time.sleep(0.5)  # let it start the search
        planner.kill()
        planner.wait(timeout=10)
        # its lookahead search alone would take seconds more; 10 s is plenty
        # for the kernel's signal, not for the search
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_running(pid) for pid in workers)
    finally:
        if planner.poll() is None:
            planner.kill()
            planner.wait()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_planning_returns_with_its_workers_and_their_threads_gone(method: str) -> None:
    # Before, the pool was shut down without waiting: its manager thread and
    # worker were still winding down when the plan came back, and a process
    # that exited then (the CLI, right after printing) sometimes raced that
    # thread at interpreter exit and printed "Exception ignored ... OSError:
    # [Errno 9] Bad file descriptor" (CPython's ProcessPoolExecutor, seen here).
    start = generated_cluster(seed=3, full=13, empty=3, instances=200)
    threads_before = set(threading.enumerate())
    planned = plan_on_cores(cluster=start, cores=2, start=method)
    assert planned.in_workers == 1 and planned.started_by == method
    assert _spawned_children() == []
    assert set(threading.enumerate()) <= threads_before


# Run as a script: what `start_method` answers in a process running one
# thread, and with a second thread running.
_START_METHOD = """
import json, threading
from reactors.balance.cores import start_method
alone = start_method()
stop = threading.Event()
other = threading.Thread(target=stop.wait)
other.start()
beside = start_method()
stop.set()
other.join()
print(json.dumps([alone, beside]))
"""


def test_workers_are_forked_only_from_a_process_running_one_thread(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]

    def answers(blas_threads: str) -> list[str]:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": blas_threads}
        done = subprocess.run(
            [sys.executable, "-c", _START_METHOD],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        got: list[str] = json.loads(done.stdout)
        return got

    assert answers("1") == ["fork", "spawn"]
    # numpy's BLAS pool is threads too (imported with the planner): not forked from
    assert answers("2") == ["spawn", "spawn"]
    # `corral balance --plan --htools` starts no thread (and keeps numpy's BLAS
    # to one): its worker is forked, to the same plan
    start = generated_cluster(seed=3, full=13, empty=3, instances=200)
    assert len(start.instances) * len(start.nodes) >= MIN_PARALLEL_WORK
    src = tmp_path / "c.data"
    src.write_text(render(start))
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run(
        [*_CORRAL, "balance", "--plan", "--htools", str(src), "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["workers_started_by"] == "fork" and doc["searches_in_workers"] == 1
    plan = plan_balance(cluster=start)
    assert [m["instance"] for m in doc["moves"]] == [m.instance for m in plan.moves]
    assert doc["search"] == plan.search
