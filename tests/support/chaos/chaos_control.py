"""Control-plane faults for chaos runs: two orchestrators (a leader and a
standby, each with its own lease and node connections, sharing one etcd client
as two `corral serve` on one machine would share a network), the leader killed
without a word (kill -9: its tasks die, its lease is left to expire) or frozen
past its lease (the process's event loop blocked, as SIGSTOP would), and a
three-member etcd losing members, its quorum, its Raft leader, or answering
slowly (a member stopped with SIGSTOP for a moment). Decides nothing about the
cluster and checks nothing: tests/support/chaos/chaos_checks.py does."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field

from devtools.local_etcd import LocalEtcd, LocalEtcdCluster
from reactors.ending import cancel_all
from reactors.engine import Engine
from tests.support.cluster.cluster_harness import Cluster


@dataclass
class Orchestrators:
    """The engines of a chaos run. `c.engine` is kept pointing at the leader
    (the one whose state the convergence checks read), `c.others` at the rest,
    so that the harness stops all of them at the end. Every process gets a
    name never used before: etcd's history then tells terms apart."""

    c: Cluster
    started: int = 0
    engines: list[Engine] = field(default_factory=list)

    async def add(self) -> Engine:
        self.started += 1
        engine = await self.c.new_engine(name=f"orch-{self.started}")
        await engine.start()
        self.engines.append(engine)
        self._sync()
        return engine

    def leader(self) -> Engine | None:
        return next((e for e in self.engines if e.leading), None)

    def _sync(self) -> None:
        lead = self.leader()
        if lead is not None or self.c.engine not in self.engines:
            self.c.engine = lead or (self.engines[0] if self.engines else None)
        self.c.others = [e for e in self.engines if e is not self.c.engine]

    async def wait_leader(self, timeout: float = 60) -> Engine:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead is not None:
                self._sync()
                return lead
            await asyncio.sleep(0.1)
        raise AssertionError(f"no orchestrator leads after {timeout}s: {self.explain()}")

    def explain(self) -> str:
        """Each orchestrator's term, tasks, fold and probes, for failure messages."""
        now = time.monotonic()
        lines = []
        for e in self.engines:
            lead = e.leadership
            known = lead.known_leader.member.id if lead.known_leader else None
            lines.append(
                f"{lead.member.id}: term {lead.term} reactors {'on' if e.reactors else 'off'} "
                f"lease {'ok' if lead.valid_lease() else 'ended'} "
                f"hold-off {max(0.0, lead._hold_off_until - now):.0f}s "
                f"lost {lead.lost_reason!r} known leader {known}; fold at "
                f"{e.ctx.state.revision}, {len(e.ctx._pending)} appends pending, "
                f"store moving {getattr(e.ctx.log_store, '_moving', None)}"
            )
            tasks = list(e._tasks)
            if e.reactors is not None:
                tasks += [*e.reactors.tasks, *e.reactors.node_tasks.values(), *e.ctx._flushing]
                tasks += e.reactors.jobs.tasks()
                w = e.reactors.workers
                lines.append(
                    f"  workers: dirty {sorted(w._dirty)} running {sorted(w._running)} "
                    f"held {sorted(w._held)} retry at "
                    f"{ {n: round(t - e.ctx.now(), 1) for n, t in w._retry_at.items()} }"
                )
                prober = e.reactors.prober
                for n, r in sorted(prober.records.items()):
                    lock = prober._locks.get(n)
                    lines.append(
                        f"  probes {n}: last ok {r.last_ok} failing since {r.failing_since} "
                        f"({r.last_error[:120]}) locked {lock is not None and lock.locked()}"
                    )
            for j in e.ctx.state.jobs.values():
                lines.append(f"  job {j.job_id} {j.kind} {j.status.value} {sorted(j.targets)}")
                lines += [f"    {at:.1f} {line[:160]}" for at, line in j.log[-12:]]
            lines += [f"  {_stack(t)}" for t in tasks]
        return "\n".join(lines)

    async def stop_leader(self) -> bool:
        """A clean restart's first half: the leader stops and resigns."""
        lead = self.leader()
        if lead is None:
            return False
        self.engines.remove(lead)
        await lead.stop()
        self._sync()
        return True

    async def kill_leader(self) -> bool:
        """kill -9 of the leader: its tasks end where they are, nothing is resigned,
        its lease runs out in etcd; a fresh process is started in its place (as
        systemd would) and stands by."""
        lead = self.leader()
        if lead is None:
            return False
        self.engines.remove(lead)
        tasks = list(lead._tasks)
        reactors = lead.reactors
        if reactors is not None:
            tasks += [*reactors.tasks, *reactors.node_tasks.values(), *reactors.jobs.tasks()]
        await cancel_all(tasks)
        lead.reactors = None
        await lead.ctx.nodes.close()
        self._sync()
        await self.add()
        return True

    def stall(self, seconds: float) -> None:
        """The process's event loop blocked for `seconds` (a stop past the lease):
        every orchestrator here freezes with it, etcd does not; when the loop runs
        again the leader still believes it leads until it looks at its clock."""
        time.sleep(seconds)

    async def stop_all(self) -> None:
        for e in self.engines:
            await e.stop()
        self.engines.clear()
        self.c.engine = None
        self.c.others = []


def _stack(task: asyncio.Task[None]) -> str:
    """Where an orchestrator's task is (or how it ended), for failure messages."""
    out = io.StringIO()
    task.print_stack(limit=8, file=out)
    return out.getvalue()


def _running(etcd: LocalEtcdCluster) -> list[LocalEtcd]:
    return [m for m in etcd.members if m.running()]


async def lose_member(etcd: LocalEtcdCluster, pick: int) -> bool:
    """One member killed (only while all run: one lost at a time)."""
    up = _running(etcd)
    if len(up) < len(etcd.members):
        return False
    await asyncio.to_thread(up[pick % len(up)].kill)
    return True


async def restore_members(etcd: LocalEtcdCluster) -> None:
    down = [m for m in etcd.members if not m.running()]
    for m in down:
        m.launch()
    for m in down:
        await asyncio.to_thread(m.wait_healthy, timeout=30)


async def lose_quorum(etcd: LocalEtcdCluster, pick: int) -> None:
    """All members but one killed: no quorum until `restore_members`."""
    up = _running(etcd)
    keep = up[pick % len(up)]
    for m in up:
        if m is not keep:
            await asyncio.to_thread(m.kill)


async def change_leader(etcd: LocalEtcdCluster, pick: int) -> bool:
    """etcd's Raft leadership handed to another running member."""
    leader = await asyncio.to_thread(etcd.leader)
    others = [m for m in _running(etcd) if m is not leader]
    if leader is None or not others:
        return False
    return await asyncio.to_thread(etcd.move_leader, others[pick % len(others)])


async def slow_member(etcd: LocalEtcdCluster, pick: int, seconds: float) -> None:
    """A member stopped (SIGSTOP) for `seconds`: its sockets stay open and its
    clients wait; the Raft leader's stop costs an etcd election."""
    up = _running(etcd)
    member = up[pick % len(up)]
    member.pause()
    try:
        await asyncio.sleep(seconds)
    finally:
        member.resume()
