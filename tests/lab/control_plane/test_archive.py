"""The log outlives etcd: a converged lab cluster's events are sealed, archived to
files and deleted from etcd, etcd is compacted; the orchestrator restarts from a
checkpoint without the archive at hand; the real `corral events --at` shows the
cluster at a revision only the archive holds, `events --since` reads through it,
and `corral audit verify` passes; an archived event changed afterwards is named."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from events.lifecycle.checkpoints import load_checkpoint, save_checkpoint
from events.lifecycle.retention import RetentionPolicy, archive_pass, count_events
from events.lifecycle.seals import load_seals, raw_events, seal_pending
from events.projection import fold_all
from orchestrator.cluster_report import status_dict
from tests.support.cluster.cluster_harness import cluster
from tests.support.cluster.events import THREE, cluster_yaml


async def test_archive_compact_restart_and_read_through(tmp_path: Path) -> None:
    archive_dir = tmp_path / "archive"
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        f = tmp_path / "cluster.yaml"
        f.write_text(cluster_yaml(c, THREE))
        assert (await c.corral("apply", "-f", str(f), "--wait")).returncode == 0
        then = engine.state.revision
        captured = status_dict(
            fold_all([x async for x in c.store.read_all() if x[0] <= then]), now=0
        )
        assert (await c.corral("instance", "stop", "db1", "--wait")).returncode == 0
        first_events = [e.id async for _, e in c.store.read_all()][:5]

        await seal_pending(c.store, block=5, final=True)
        await engine.ctx.wait_revision((await load_seals(c.store))[-1].last_revision)
        checkpoint = await save_checkpoint(c.store, engine.state)
        policy = RetentionPolicy(
            url=archive_dir.as_uri(), keep_events=3, min_segment_events=10, defragment=False
        )
        done = await archive_pass(c.store, policy)
        assert done is not None, "nothing archived"
        assert then <= done.segment.last_revision <= checkpoint.revision
        assert await raw_events(c.store, 0, to_revision=done.segment.last_revision) == []
        left = await count_events(c.store)
        assert 0 < left < done.segment.events
        await c.stop_engine()

        # The restart folds the checkpoint and the tail in etcd: the archive is
        # not even reachable while it starts.
        hidden = tmp_path / "archive-away"
        archive_dir.rename(hidden)
        assert (await load_checkpoint(c.store)) is not None
        engine = await c.start_engine()
        assert engine.state.revision >= checkpoint.revision
        assert sorted(engine.state.desired.instances) == ["db1", "web1", "web2"]
        assert engine.state.desired.instances["db1"].power.value == "stopped"  # type: ignore[index]
        hidden.rename(archive_dir)
        started = engine.state
        replayed = fold_all([x async for x in c.store.read_all() if x[0] <= started.revision])
        assert replayed.event_count == started.event_count
        assert replayed.placements == started.placements
        assert replayed.desired == started.desired
        assert (await c.corral("instance", "start", "db1", "--wait")).returncode == 0
        assert len(c.running_on("db1")) == 1

        past = await c.corral("events", "--at", str(then), "--json")
        assert past.returncode == 0, past.stderr
        d = json.loads(past.stdout)
        assert d["revision"] == captured["revision"] == then
        assert d["instances"] == captured["instances"]
        since = await c.corral("events", "--since", "1", "--json")
        assert [e["id"] for e in json.loads(since.stdout)][:5] == first_events
        audit = await c.corral("audit", "verify")
        assert audit.returncode == 0 and "audit verify: ok" in audit.stdout, audit.stdout

        # An archived event changed afterwards (and the index made to match):
        # audit verify fails and names the event and the segment.
        path = archive_dir / done.segment.name
        text = gzip.decompress(path.read_bytes())
        line = next(ln for ln in text.splitlines() if b'"event"' in ln and b"db1" in ln)
        path.write_bytes(gzip.compress(text.replace(line, line.replace(b"db1", b"db2"))))
        tampered = await c.corral("audit", "verify", "--json")
        assert tampered.returncode == 1
        result = json.loads(tampered.stdout)
        assert f"archive segment {done.segment.seq}" in result["problem"]
        assert done.segment.name in result["problem"]
