"""`corral status` and `corral cluster verify` as a user runs them (a new
process, through the console script's fast exit) print exactly what a fold of the
whole log gives: from the newest checkpoint and the events read after it while it
was decoded; from an older checkpoint when the newest does not validate (a forged
one is never trusted); from a checkpoint holding only part of its revision's
append. In-process, `main` gives the same and leaves the collector as it was."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import time
from dataclasses import replace

import pytest

from devtools.local_etcd import LocalEtcd
from events.lifecycle.checkpoints import manifests, save_checkpoint
from events.model import Event
from events.projection import fold
from events.state import ClusterState
from events.store import EventStore
from orchestrator.cli.main import main
from orchestrator.cli.status import render_status
from orchestrator.cluster_report import saved_rows, status_dict, verify
from tests.support.cluster.corral_cli import corral_async
from tests.support.states.big_cluster import build_events, next_moment

NODES, INSTANCES = 4, 40


async def _append(store: EventStore, events: list[Event]) -> None:
    for i in range(0, len(events), 60):
        await store.append(events[i : i + 60])


async def _converged(store: EventStore) -> ClusterState:
    """A converged cluster appended to the log, and its fold."""
    by_rev: dict[int, list[Event]] = {}
    for rev, event in build_events(NODES, INSTANCES):
        by_rev.setdefault(rev, []).append(event)
    for rev in sorted(by_rev):
        await _append(store, by_rev[rev])
    return await _full_fold(store)


async def _full_fold(store: EventStore) -> ClusterState:
    return fold(ClusterState(), [x async for x in store.read_all()])


async def _live(store: EventStore, state: ClusterState, moments: int) -> ClusterState:
    """`moments` of a live cluster's life appended after `state` (one append each)."""
    for n in range(moments):
        await store.append(next_moment(state, n, t=time.time()))
    return await _full_fold(store)


async def _checkpoint(store: EventStore, state: ClusterState) -> None:
    await save_checkpoint(store, state, views=saved_rows(state, now=time.time()))


async def _says_what_the_fold_says(
    etcd: LocalEtcd, full: ClusterState, *, warning: str = ""
) -> None:
    """`corral status` (text and JSON) and `corral cluster verify` as processes
    print what the full fold gives, and only that on standard output: the store's
    `warning`, when given, goes to standard error."""

    def output(done: subprocess.CompletedProcess[str]) -> str:
        if warning:
            assert warning in done.stderr, done.stderr[:500]
        return done.stdout

    text = await corral_async(etcd, "status")
    assert text.returncode == 0, text.stderr
    assert output(text) == render_status(status_dict(full, now=time.time())) + "\n"
    as_json = await corral_async(etcd, "status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(output(as_json)) == json.loads(
        json.dumps(status_dict(full, now=time.time()), default=str)
    )
    checked = await corral_async(etcd, "cluster", "verify", "--json")
    errors = sum(1 for f in verify(full, now=time.time()) if f.severity == "error")
    assert checked.returncode == (1 if errors else 0), checked.stderr
    assert json.loads(output(checked))["errors"] == errors


async def test_status_from_a_checkpoint_and_the_events_after_it(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        state = await _converged(store)
        await _checkpoint(store, state)
        full = await _live(store, state, 12)  # read while the checkpoint decodes
        assert full.revision > state.revision and full.event_count > state.event_count
        await _says_what_the_fold_says(etcd, full)
        # With nothing after the checkpoint, too.
        await _checkpoint(store, full)
        await _says_what_the_fold_says(etcd, full)


async def test_a_newest_checkpoint_that_does_not_validate_is_passed_over(
    etcd: LocalEtcd,
) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        older = await _converged(store)
        await _checkpoint(store, older)
        newer = await _live(store, older, 5)
        # The newest checkpoint, forged: an instance's memory doubled (the MEM column
        # would show it) and its os a shell command, so it does not validate; its
        # manifest matches its chunks, as someone with write access to etcd can make.
        name = sorted(newer.desired.instances)[0]
        spec = newer.desired.instances[name]
        forged = replace(
            newer,
            desired=replace(
                newer.desired,
                instances={
                    **newer.desired.instances,
                    name: replace(spec, memory_mib=spec.memory_mib * 2, os="x; reboot"),
                },
            ),
        )
        await _checkpoint(store, forged)
        assert [m.revision for m in await manifests(store)] == [older.revision, newer.revision]
        full = await _live(store, newer, 5)
        await _says_what_the_fold_says(
            etcd, full, warning="checkpoint unusable; trying an older one"
        )
        assert render_status(status_dict(forged, now=time.time())) != render_status(
            status_dict(full, now=time.time())
        )


async def test_a_checkpoint_holding_part_of_its_last_append(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        state = await _converged(store)
        moment = next_moment(state, 0, t=time.time())
        await store.append(moment)
        log = [x async for x in store.read_all()]
        last = log[-1][0]
        assert [r for r, _ in log[-len(moment) :]] == [last] * len(moment)
        part = fold(ClusterState(), log[:-1])  # all but the append's last event
        assert part.revision == last
        await _checkpoint(store, part)
        full = await _live(store, fold(ClusterState(), log), 3)
        await _says_what_the_fold_says(etcd, full)


async def test_main_in_process_prints_the_same_and_keeps_the_collector(
    etcd: LocalEtcd, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        state = await _converged(store)
        await _checkpoint(store, state)
        full = await _live(store, state, 3)
    for key, value in etcd.client_env("alice").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CORRAL_CLUSTER", "c1")
    assert gc.isenabled()
    capsys.readouterr()
    # `main` runs its own event loop: from a thread, as a caller outside this one.
    assert await asyncio.to_thread(main, ["status"]) == 0
    assert capsys.readouterr().out == render_status(status_dict(full, now=time.time())) + "\n"
    assert gc.isenabled()
    # An error is the same one line, exit status 1, and the collector runs again.
    monkeypatch.setenv("CORRAL_CLUSTER", "nope")
    assert await asyncio.to_thread(main, ["status"]) == 1
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err.startswith("corral status: etcd refused reading /corral/nope/")
    assert gc.isenabled()
