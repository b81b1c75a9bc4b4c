"""`corral apply --wait` of an apply that takes several etcd transactions, the
leader acting between them: the wait sees what the leader wrote in between and
ends when everything runs. It followed the log from the last transaction's
revision, with the apply's events folded in by hand, so the placements the leader
made between the transactions were never seen and `--wait` waited for them for
ever: `make demo` (60 instances, two transactions) stalled so in 3 of 12 runs,
the leader done and idle. Here the split is forced with a smaller transaction
limit, and the CLI (in-process, in a thread of its own) is held after its first
transaction until the leader has placed an instance of it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import events.store
from events.model import Event
from events.store import EventStore
from orchestrator.cli.main import main
from tests.support.cluster.cluster_harness import cluster
from tests.support.cluster.events import cluster_yaml

NAMES = [f"vm{i}" for i in range(1, 5)]
INSTANCES = "".join(
    f"""  - name: {name}
    memory: 256M
    vcpus: 1
    disks: [1G]
"""
    for name in NAMES
)


async def test_apply_wait_sees_what_the_leader_wrote_between_its_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, INSTANCES))
        for key, value in {**c.etcd.client_env("alice"), "CORRAL_CLUSTER": "lab"}.items():
            monkeypatch.setenv(key, value)
        # A few events per transaction: this small apply takes several.
        monkeypatch.setattr(events.store, "MAX_TXN_OPS", 6)

        real_append = EventStore.append
        cli_appends: list[int] = []
        placed_between: list[str] = []
        held_after: list[int] = []  # how many CLI transactions were written then

        async def append(
            self: EventStore,
            batch: Sequence[Event],
            *,
            expected: Mapping[str, int] | None = None,
            term: int | None = None,
        ) -> int:
            revision = await real_append(self, batch, expected=expected, term=term)
            if threading.current_thread() is threading.main_thread():
                return revision  # the leader's own
            cli_appends.append(revision)
            if not placed_between and any("instance" in k for e in batch for k in e.objects()):
                # Hold the CLI until the leader placed an instance of this first
                # transaction with instances (it acts on it before the next is written).
                for _ in range(300):
                    placed = set(engine.state.placements) & set(NAMES)
                    if placed:
                        placed_between.extend(sorted(placed))
                        held_after.append(len(cli_appends))
                        break
                    await asyncio.sleep(0.05)
            return revision

        monkeypatch.setattr(EventStore, "append", append)
        args = ["apply", "-f", str(f), "--wait", "--timeout", "40", "-m", "in pieces"]
        rc: Any = await asyncio.to_thread(main, args)

        assert len(cli_appends) > 1, "the apply took one transaction: nothing to test"
        assert placed_between, "the leader placed nothing while the apply was held"
        assert len(cli_appends) > held_after[0], "the apply was held after its last transaction"
        assert rc == 0, "apply --wait did not see every instance converge"
        for name in NAMES:
            assert len(c.running_on(name)) == 1, name
