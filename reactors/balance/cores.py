"""`corral balance`'s planning on more than one core: the same plan as
`reactors.balance.plan.plan_balance`, sooner. With the full set of searches
the lookahead search (the longest of the five) runs in a worker process while
this one runs the greedy search and then the pairs, "greedy, less data" and
frugal searches (with three cores or more, the pairs search gets a worker too,
and so on in that order); with the quick set the "greedy, less data" search
runs in a worker beside the greedy one here (and the frugal one with three
cores, here after the greedy one otherwise). This process folds and weighs
each run's plans here as soon as the run is done (`consider`), the ones from
here while the worker still searches; `keep_plan` then keeps one exactly as
`plan_balance` does, so the plan does not depend on how many cores there are.
When the plan is kept by "moves" (`stops_at_greedy`), the greedy run's end
score is shared with the workers the moment it is known: a worker's search
stops at its first move reaching it, and the worker trims and weighs its own
run (`trim_run`, `consider`), the same run whenever the score arrived.

A worker is forked when this process runs a single thread (`start_method`:
offline planning on an htools file, where nothing has started one), which
takes milliseconds; otherwise it is a fresh interpreter (`spawn`: a fork copies
only the forking thread, so a lock another thread held, such as one of the
etcd client's gRPC threads, would stay held in the worker), which costs about
0.2 s to start. Below `MIN_PARALLEL_WORK` (instances times nodes) the searches
together take less than a spawned worker saves, and run here one after another
unless the worker can be forked.
A worker that cannot start or dies is not an error: its search runs here
instead. An error in the search itself (a bug) is raised as it would be in
`plan_balance`; an error or an interrupt here stops the workers before it is
raised, and a worker ends with the planning process however that ends
(SIGTERM, SIGKILL).

Must not plan anything itself (`reactors.balance.plan` does), and must not change the
cluster.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from reactors.balance.groups import group_views, groups_with_nodes, merge_plans
from reactors.balance.plan import (
    DEFAULT_LOOKAHEAD,
    DEFAULT_MIN_GAIN,
    DEFAULT_PREFER,
    DEFAULT_SEARCHES,
    BalancePlan,
    Considered,
    SearchLimits,
    SearchRun,
    SearchSpec,
    consider,
    keep_plan,
    run_search,
    searches,
    stops_at_greedy,
    trim_run,
    which_prefer,
    which_searches,
)
from reactors.htools.model import BCluster

# Instances times nodes below which the searches run in this process only
# when a worker would be spawned. On this project's 2-core machine: 200
# instances on 16 nodes (3,200) take about 2 s in one process, of which a
# spawned worker saves 0.4 to 0.8 s; 70 on 8 nodes (560) take 0.6 s, and a
# spawned worker makes that 0.04 s longer. A forked worker costs milliseconds
# and is used at any size: 0.48-0.67 s in one process against 0.38-0.44 s
# with one on three 560-clusters, 0.19 s against 0.12-0.14 s on 20 instances
# on 4 nodes (80).
MIN_PARALLEL_WORK = 2000

# A worker's run, with its plans when it could weigh them itself.
_AwayRun = tuple[SearchRun, list[Considered] | None]


# prctl's option: the signal a process gets when its parent ends (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

# How long to wait for a terminated worker to exit (it takes SIGTERM at once).
_STOP_WAIT = 5.0


def usable_cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def start_method() -> str:
    """How to start workers from this process: "fork" when it runs a single
    thread (nothing another thread holds can be copied into the worker held),
    "spawn" otherwise or where the threads cannot be counted."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:  # pragma: no cover - not Linux
        return "spawn"
    return "fork" if threads == 1 else "spawn"


@dataclass(frozen=True, slots=True)
class CoresPlan:
    """The plan, how many of its searches ran in a worker process (0: all of
    them in this one), and how the workers were started ("fork" or "spawn";
    None when there were none to start); how many of the workers' searches
    stopped at the greedy plan's score and were weighed there (`_search_away`)."""

    plan: BalancePlan
    in_workers: int
    started_by: str | None = None
    weighed_in_workers: int = 0


def plan_on_cores(
    *,
    cluster: BCluster,
    avoid: frozenset[str] = frozenset(),
    max_moves: int = 1000,
    min_gain: float = DEFAULT_MIN_GAIN,
    lookahead: int = DEFAULT_LOOKAHEAD,
    prefer: str = DEFAULT_PREFER,
    search_set: str = DEFAULT_SEARCHES,
    cores: int | None = None,
    start: str | None = None,
) -> CoresPlan:
    """`plan_balance` with these arguments, its searches spread over `cores`
    processes (default: the CPUs this process may use), started by `start`
    ("fork" or "spawn"; default: `start_method()`'s answer)."""
    if start not in (None, "fork", "spawn"):
        raise ValueError(f"start must be fork or spawn, not {start!r}")
    if len(groups_with_nodes(cluster)) > 1:
        done = [
            (
                g,
                plan_on_cores(
                    cluster=view,
                    avoid=avoid,
                    max_moves=max_moves,
                    min_gain=min_gain,
                    lookahead=lookahead,
                    prefer=prefer,
                    search_set=search_set,
                    cores=cores,
                    start=start,
                ),
            )
            for g, view in group_views(cluster)
        ]
        return CoresPlan(
            plan=merge_plans(cluster, [(g, c.plan) for g, c in done], avoid=avoid),
            in_workers=sum(c.in_workers for _, c in done),
            started_by=next((c.started_by for _, c in done if c.started_by), None),
            weighed_in_workers=sum(c.weighed_in_workers for _, c in done),
        )
    limits = SearchLimits(max_moves=max_moves, min_gain=min_gain)
    which = which_searches(asked=search_set, lookahead=lookahead, cluster=cluster)
    specs = searches(lookahead=lookahead, which=which)
    rule = which_prefer(asked=prefer, which=which)
    trim = stops_at_greedy(rule)
    cores = usable_cores() if cores is None else cores
    method = start or start_method()
    work = len(cluster.instances) * len(cluster.nodes)
    spread = cores >= 2 and (method == "fork" or work >= MIN_PARALLEL_WORK)
    # the longest search first; the others get a worker each while cores last
    # (the greedy search always runs here: the others' plans are weighed against it)
    away = [s for s in specs if s.pick == "ahead"] + [
        s for s in specs if s.pick in ("pairs", "near", "frugal")
    ]
    away = away[: cores - 1] if spread else []
    runs: dict[str, SearchRun] = {}
    # each run's plans, weighed as soon as it is done (`consider`: folding and
    # figures, here while a worker's search still runs)
    plans: dict[str, list[Considered]] = {}
    greedy_name = specs[0].name
    pool = None
    futures: dict[str, Future[_AwayRun]] = {}
    in_workers = weighed_away = 0
    started_by: str | None = None
    # the greedy plan's score, for the workers' searches (NaN until it is known)
    shared: ctypes.c_double | None = None

    def greedy_score() -> float | None:
        greedy = runs.get(greedy_name)
        return greedy.end if greedy else None

    def reach() -> float | None:
        return greedy_score() if trim else None

    def weigh(spec: SearchSpec, run: SearchRun, done: list[Considered] | None = None) -> None:
        """Keep a run and its plans (`done`: weighed in the worker already)."""
        known = reach()
        if known is not None and spec.name != greedy_name:
            run = trim_run(run, known)
        runs[spec.name] = run
        if spec.name == greedy_name and shared is not None:
            shared.value = run.end  # the workers' searches can stop there
        if done is None:
            done = consider(cluster=cluster, avoid=avoid, run=run, greedy_score=greedy_score())
        plans[spec.name] = done

    try:
        if away:
            started_by = method
            context = multiprocessing.get_context(started_by)
            shared = context.Value("d", math.nan, lock=False) if trim else None
            try:
                pool = ProcessPoolExecutor(
                    max_workers=len(away),  # at most cores - 1 (above)
                    mp_context=context,
                    initializer=_start_worker,
                    initargs=(os.getpid(), shared),
                )
                for spec in away:
                    futures[spec.name] = pool.submit(
                        _search_away, cluster=cluster, avoid=avoid, spec=spec, limits=limits
                    )
            except (BrokenProcessPool, OSError):
                futures.clear()  # no worker: every search runs here
        for spec in (s for s in specs if s.name not in futures):
            here = run_search(cluster=cluster, avoid=avoid, spec=spec, limits=limits, reach=reach)
            weigh(spec, here)
        for spec in (s for s in specs if s.name in futures):
            away_run = _result(futures[spec.name])
            if away_run is None:  # the worker died: the same search, here
                here = run_search(
                    cluster=cluster, avoid=avoid, spec=spec, limits=limits, reach=reach
                )
                weigh(spec, here)
            else:
                in_workers += 1
                weighed_away += away_run[1] is not None
                weigh(spec, *away_run)
    except BaseException:  # an error or an interrupt here: the workers' plans are not wanted
        if pool is not None:
            stopped = _stop_workers(pool)
            pool.shutdown(wait=stopped, cancel_futures=True)
        raise
    # every worker's search is done: wait for the pool's thread and workers to
    # end (milliseconds). Returning before they did left a race at interpreter
    # exit in CPython's pool: "Exception ignored ... Bad file descriptor".
    if pool is not None:
        pool.shutdown(wait=True)
    plan = keep_plan(
        cluster=cluster,
        avoid=avoid,
        plans=[c for s in specs for c in plans[s.name]],
        prefer=rule,
        searches=which,
        scored=sum(run.scored for run in runs.values()),
    )
    return CoresPlan(
        plan=plan, in_workers=in_workers, started_by=started_by, weighed_in_workers=weighed_away
    )


# In a worker: the greedy plan's score as the planning process shares it
# (`_start_worker`), NaN until it is known; None when it shares none.
_shared_score: ctypes.c_double | None = None


def _start_worker(parent: int, shared: ctypes.c_double | None) -> None:
    """In a worker, first: keep the shared greedy score (`_search_away`), and
    end with the planning process (`_end_with`)."""
    global _shared_score
    _shared_score = shared
    _end_with(parent)


def _search_away(
    *, cluster: BCluster, avoid: frozenset[str], spec: SearchSpec, limits: SearchLimits
) -> _AwayRun:
    """`run_search` in a worker, stopping at the greedy plan's score once the
    planning process shares it (`stops_at_greedy`); once it knows that score
    the worker also trims and weighs its run (`trim_run`, `consider`), as the
    planning process would, which then need not."""
    shared = _shared_score

    def reach() -> float | None:
        if shared is None:
            return None
        known = shared.value
        return None if math.isnan(known) else known

    run = run_search(cluster=cluster, avoid=avoid, spec=spec, limits=limits, reach=reach)
    known = reach()
    if known is None:
        return run, None
    run = trim_run(run, known)
    return run, consider(cluster=cluster, avoid=avoid, run=run, greedy_score=known)


def _end_with(parent: int) -> None:
    """In a worker, first: end when the planning process ends, however it ends.
    A SIGTERM or SIGKILL runs none of its clean-up, and a worker left behind
    would finish its search and then wait for work forever (seen: still there
    30 s after its parent was sent SIGTERM). Linux's `PR_SET_PDEATHSIG` sends
    the worker SIGTERM when the thread that started it ends; elsewhere nothing
    is done."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # it ended before that was set
        os._exit(1)


def _stop_workers(pool: ProcessPoolExecutor) -> bool:
    """End the workers' searches now, when planning failed here: their plans
    are no longer wanted, and a search left running would hold the command up
    for seconds after its error (the interpreter waits for its workers).
    Whether they all ended."""
    # `ProcessPoolExecutor` has no public way to do this before Python 3.14
    # (`terminate_workers`); its `_processes` are multiprocessing `Process`es.
    workers: dict[int, BaseProcess] = getattr(pool, "_processes", None) or {}
    for proc in list(workers.values()):
        proc.terminate()
    for proc in list(workers.values()):
        proc.join(timeout=_STOP_WAIT)
    return not any(proc.is_alive() for proc in workers.values())


def _result(future: Future[_AwayRun]) -> _AwayRun | None:
    """The worker's run; None when the worker could not start or died."""
    try:
        return future.result()
    except (BrokenProcessPool, OSError):
        return None
