"""Checkpoints and the archive against a real etcd and a real S3-compatible server
(moto in server mode): a checkpoint larger than one etcd request round-trips and
only the newest are kept; archived events are read back transparently, in order,
after their keys left etcd; tampering with an archived segment is named by
`verify`, down to the event when the index was rewritten to match."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import boto3
import pytest

import events.lifecycle.checkpoints as checkpoints
from devtools.local_etcd import LocalEtcd
from events.archive import IndexEntry
from events.lifecycle.retention import RetentionPolicy, archive_pass, count_events
from events.lifecycle.seals import seal_pending, verify
from events.projection import FOLD_VERSION, fold
from events.state import ClusterState
from events.store import EventStore
from tests.support.cluster.events import ev
from tests.support.cluster.s3 import s3_server


async def test_checkpoints_in_chunks_newest_kept(
    etcd: LocalEtcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "CHUNK", 300)  # several chunks per checkpoint
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        states = []
        for i in range(3):
            await store.append([ev(10 * i + j) for j in range(10)])
            got = [x async for x in store.read_all()]
            states.append(fold(ClusterState(), got))
            manifest = await checkpoints.save_checkpoint(store, states[-1])
            assert manifest.chunks > 1 and manifest.fold_version == FOLD_VERSION
        kept = await checkpoints.manifests(store)
        assert [m.revision for m in kept] == [s.revision for s in states[-2:]]
        assert await checkpoints.load_checkpoint(store) == states[-1]
        assert await checkpoints.load_checkpoint(store, at_most=states[1].revision) == states[1]
        # A checkpoint made by another fold version is never used.
        monkeypatch.setattr(checkpoints, "FOLD_VERSION", FOLD_VERSION + 1)
        assert await checkpoints.load_checkpoint(store) is None


async def test_s3_archive_read_through_and_tampering(etcd: LocalEtcd) -> None:
    with s3_server() as endpoint:
        url = f"s3://corral-archive/c1?endpoint={endpoint}"
        async with EventStore.connect(
            [etcd.endpoint], "c1", credentials=etcd.credentials()
        ) as store:
            events = [ev(i) for i in range(600)]
            for i in range(0, 600, 10):
                await store.append(events[i : i + 10])
            await checkpoints.save_checkpoint(
                store, fold(ClusterState(), [x async for x in store.read_all()])
            )
            await seal_pending(store, block=100, final=True)
            policy = RetentionPolicy(url=url, keep_events=150, min_segment_events=100)
            done = await archive_pass(store, policy)
            assert done is not None and done.segment.events == 400  # whole seals of 100
            assert await count_events(store) == 200
            assert await archive_pass(store, policy) is None  # too few left to archive
            got = [e.id async for _, e in store.read_all()]
            assert got == [e.id for e in events]
            from_archive = [e.id async for _, e in store.read_all(from_revision=10)]
            assert from_archive[0] == events[80].id  # revision 10 is the 9th append
            assert (await verify(store)).ok

            entry = done.segment
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            raw = s3.get_object(Bucket="corral-archive", Key=f"c1/{entry.name}")["Body"].read()
            victim = events[137]
            text = gzip.decompress(raw).replace(b"event 137", b"event 999")
            assert text != gzip.decompress(raw)
            forged = gzip.compress(text)
            s3.put_object(Bucket="corral-archive", Key=f"c1/{entry.name}", Body=forged)
            fresh = EventStore(client=store.client, cluster="c1", endpoint=store.endpoint)
            result = await verify(fresh)
            assert not result.ok
            assert f"archive segment {entry.seq}" in result.problem
            assert entry.name in result.problem and "does not match its index" in result.problem

            # Someone who can also write etcd makes the index match the forgery:
            # the seals still name the changed event.
            doc = json.loads(entry.to_json())
            doc.update(sha256=hashlib.sha256(forged).hexdigest(), size=len(forged))
            index_key = store.root + b"archive/segments/%012d" % entry.seq
            await store.client.put(index_key, json.dumps(doc).encode())
            forged_entry = IndexEntry.from_json(json.dumps(doc).encode(), key="k")
            assert forged_entry.sha256 != entry.sha256
            fresh = EventStore(client=store.client, cluster="c1", endpoint=store.endpoint)
            result = await verify(fresh)
            assert not result.ok and "do not match the seal" in result.problem
            assert result.key == store.event_key(victim.id).decode()
            assert f"archive segment {entry.seq}" in result.problem and result.revision > 0


async def test_archived_seals_verify_after_a_key_rotation(etcd: LocalEtcd, tmp_path: Path) -> None:
    """Seals signed with the old key go to the archive, the newer ones in etcd
    are signed with the new key: verify with both public keys passes; a segment
    re-sealed by someone without the old key does not."""
    from events.lifecycle.seal_keys import SealKeys, SealSigner, new_key_pair

    keys_dir = tmp_path / "keys"
    new_key_pair(tmp_path / "old.key", keys_dir)
    old = SealSigner.from_file(tmp_path / "old.key")
    url = (tmp_path / "archive").as_uri()
    async with EventStore.connect(
        [etcd.endpoint], "c1", credentials=etcd.credentials("orchestrator")
    ) as store:
        events = [ev(i) for i in range(300)]
        for i in range(0, 200, 10):
            await store.append(events[i : i + 10])
        await seal_pending(store, block=50, final=True, signer=old)
        await checkpoints.save_checkpoint(
            store, fold(ClusterState(), [x async for x in store.read_all()])
        )
        policy = RetentionPolicy(url=url, keep_events=50, min_segment_events=50, defragment=False)
        done = await archive_pass(store, policy)
        assert done is not None and done.segment.events == 150
        new_key_pair(tmp_path / "new.key", keys_dir)
        new = SealSigner.from_file(tmp_path / "new.key")
        for i in range(200, 300, 10):
            await store.append(events[i : i + 10])
        await seal_pending(store, block=50, final=True, signer=new)
        result = await verify(store, keys=SealKeys.from_dir(keys_dir))
        assert result.ok, result.problem
        assert result.sealed_events == 300 and result.signed == result.seals == 6
        # Without the old public key, the archived seals are named.
        (keys_dir / f"{old.key_id}.pub").unlink()
        result = await verify(store, keys=SealKeys.from_dir(keys_dir))
        assert not result.ok and f"archive segment {done.segment.seq}" in result.problem
