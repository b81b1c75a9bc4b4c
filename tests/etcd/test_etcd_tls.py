"""etcd under TLS with client certificates and corral's roles: the orchestrator, an
operator's CLI and a read-only identity each do exactly what their etcd role
allows (etcd itself refuses the rest), the CLI's actor is the certificate's
identity, and a wrong or missing certificate is one clear line."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from aetcd.exceptions import ClientError

from devtools.local_etcd import LocalEtcd
from devtools.pki import LocalPki
from events.etcd_client import EtcdConfigError, EtcdCredentials, EtcdPermissionDenied
from events.ids import NodeName
from events.lifecycle.checkpoints import save_checkpoint
from events.lifecycle.seals import seal_pending
from events.loading import load_state
from events.state import ClusterState
from events.store import EtcdUnavailable, EventStore
from tests.support.cluster.events import ev

CLUSTER_FILE = """cluster:
  name: c1
nodes:
  - name: node1
    address: 127.0.0.1
    memory: 8G
    disk: 100G
    cpus: 4
    fence: {agent: fence_ipmilan, options: {lanplus: 1}}
"""


def corral(etcd: LocalEtcd, identity: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **etcd.client_env(identity), "CORRAL_CLUSTER": "c1"}
    env["CORRAL_ACTOR"] = "user:mallory"  # no longer believed
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def test_each_identity_does_what_its_role_allows(etcd: LocalEtcd, tmp_path: Path) -> None:
    f = tmp_path / "c1.yaml"
    f.write_text(CLUSTER_FILE)
    # The operator's CLI applies a file; the actor is its certificate's CN.
    applied = await asyncio.to_thread(corral, etcd, "alice", "apply", "-f", str(f), "--json")
    assert applied.returncode == 0, applied.stderr
    # The read-only identity reads, verifies the seals, and may not apply.
    status = await asyncio.to_thread(corral, etcd, "auditor", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["nodes"]["total"] == 1
    f.write_text(CLUSTER_FILE.replace("cpus: 4", "cpus: 8"))
    refused = await asyncio.to_thread(corral, etcd, "auditor", "apply", "-f", str(f))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "etcd refused" in refused.stderr and "auditor" in refused.stderr
    audit = await asyncio.to_thread(corral, etcd, "auditor", "audit", "verify", "--json")
    assert audit.returncode == 0, audit.stderr

    async with EventStore.connect(
        [etcd.endpoint], "c1", credentials=etcd.credentials("orchestrator")
    ) as orchestrator:
        state = await load_state(orchestrator)
        recorded = [e for _, e in [x async for x in orchestrator.read_all()]]
        assert recorded and {e.actor for e in recorded} == {"user:alice"}
        assert state.desired.nodes[NodeName("node1")].cpus == 4  # the auditor's apply left nothing
        # The orchestrator writes checkpoints and seals.
        await save_checkpoint(orchestrator, state)
        assert await seal_pending(orchestrator, final=True) == 1

    async with EventStore.connect(
        [etcd.endpoint], "c1", credentials=etcd.credentials("alice")
    ) as operator:
        assert operator.identity == "alice"
        await operator.append([ev(1)])  # operator events: allowed
        with pytest.raises(EtcdPermissionDenied, match="alice"):
            await save_checkpoint(operator, ClusterState())
        with pytest.raises(ClientError, match="permission denied"):
            await operator.client.put(operator.root + b"seals/999999999999", b"{}")
        with pytest.raises(ClientError, match="permission denied"):
            await operator.client.put(operator.root + b"leader", b"me")

    async with EventStore.connect(
        [etcd.endpoint], "c1", credentials=etcd.credentials("auditor")
    ) as reader:
        assert len([x async for x in reader.read_all()]) == len(recorded) + 1
        with pytest.raises(EtcdPermissionDenied, match="auditor"):
            await reader.append([ev(2)])
        # Another cluster's prefix is not granted at all.
    with pytest.raises(EtcdPermissionDenied):
        async with EventStore.connect(
            [etcd.endpoint], "elsewhere", credentials=etcd.credentials("orchestrator")
        ):
            pass


async def test_wrong_or_missing_certificates_are_clear(etcd: LocalEtcd, tmp_path: Path) -> None:
    good = etcd.credentials("alice")
    assert good is not None and good.cert is not None and good.key is not None
    # An https endpoint without credentials, or an http one with them.
    with pytest.raises(EtcdConfigError, match="speaks TLS"):
        async with EventStore.connect([etcd.endpoint], "c1"):
            pass
    with pytest.raises(EtcdConfigError, match="plaintext"):
        async with EventStore.connect(
            [etcd.endpoint.replace("https", "http")], "c1", credentials=good
        ):
            pass
    # A missing file, and a key that is not the certificate's.
    with pytest.raises(EtcdConfigError, match=r"nope\.pem"):
        async with EventStore.connect(
            [etcd.endpoint],
            "c1",
            credentials=EtcdCredentials(ca=good.ca, cert=tmp_path / "nope.pem", key=good.key),
        ):
            pass
    other = etcd.credentials("auditor")
    assert other is not None
    with pytest.raises(EtcdConfigError, match="does not match"):
        async with EventStore.connect(
            [etcd.endpoint],
            "c1",
            credentials=EtcdCredentials(ca=good.ca, cert=good.cert, key=other.key),
        ):
            pass
    # A certificate from another CA: etcd refuses it, and says so.
    stranger = LocalPki.create(tmp_path / "other-ca", identities=("alice",))
    forged = EtcdCredentials(
        ca=good.ca, cert=stranger.credentials("alice").cert, key=stranger.credentials("alice").key
    )
    with pytest.raises(EtcdUnavailable, match="refused the client certificate"):
        async with EventStore.connect([etcd.endpoint], "c1", credentials=forged, timeout=2):
            pass
    # Trusting another CA: etcd's server certificate is not accepted.
    with pytest.raises(EtcdUnavailable, match="server certificate was not accepted"):
        async with EventStore.connect(
            [etcd.endpoint],
            "c1",
            credentials=EtcdCredentials(ca=stranger.ca, cert=good.cert, key=good.key),
            timeout=2,
        ):
            pass
    # A valid certificate whose CN is no etcd user.
    assert etcd.pki is not None
    nobody = etcd.pki.issue("nobody", cn="nobody")
    with pytest.raises(EtcdPermissionDenied, match="nobody"):
        async with EventStore.connect([etcd.endpoint], "c1", credentials=nobody):
            pass
    # The CLI says the same in one line.
    env = {
        **os.environ,
        **etcd.client_env("alice"),
        "CORRAL_CLUSTER": "c1",
        "CORRAL_ETCD_CERT": str(stranger.credentials("alice").cert),
        "CORRAL_ETCD_KEY": str(stranger.credentials("alice").key),
    }
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "orchestrator.cli.main", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "refused the client certificate" in out.stderr and out.stderr.count("\n") == 1


async def _reseal_without_the_key(store: EventStore) -> None:
    """What someone with full etcd write access can do: recompute every seal's
    digests and chain over the rewritten log, and sign with a key of their own
    under the real key's id."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from events.lifecycle.seals import _as_dict, _chain, _digest, load_seals, raw_events

    stored = {k: v for _, _, k, v in await raw_events(store, 0)}
    mine = Ed25519PrivateKey.generate()
    prev = "0" * 64
    for seal in await load_seals(store):
        digests = tuple(_digest(k.encode(), stored[k]) for k in seal.keys)
        forged = replace(seal, digests=digests, prev=prev, chain=_chain(prev, digests))
        forged = replace(forged, sig=base64.b64encode(mine.sign(forged.body())).decode())
        await store.client.put(
            store.root + b"seals/%012d" % seal.seq, json.dumps(_as_dict(forged)).encode()
        )
        prev = forged.chain


async def test_a_forged_event_with_a_stolen_etcd_credential_is_reported(
    etcd: LocalEtcd, tmp_path: Path
) -> None:
    """The orchestrator signs its seals with a key on its host. Someone holding a
    stolen orchestrator certificate (full write access to the cluster's keys) but
    not the seal key rewrites an event and every seal after it: the hash chain
    checks out (what the old unkeyed seals could tell), the signatures do not."""
    from events.lifecycle.seal_keys import SealSigner, new_key_pair
    from events.lifecycle.seals import verify

    public_dir = tmp_path / "seal-keys"
    new_key_pair(tmp_path / "seal.key", public_dir)
    signer = SealSigner.from_file(tmp_path / "seal.key")
    events = [ev(i) for i in range(30)]
    async with EventStore.connect(
        [etcd.endpoint], "c1", credentials=etcd.credentials("orchestrator")
    ) as store:
        for i in range(0, 30, 5):
            await store.append(events[i : i + 5])
        assert await seal_pending(store, signer=signer, block=10, final=True) == 3
    # The stolen credential: the orchestrator's own certificate.
    async with EventStore.connect(
        [etcd.endpoint], "c1", credentials=etcd.credentials("orchestrator")
    ) as thief:
        victim = thief.event_key(events[17].id)
        raw = (await thief.client.get(victim)).value
        rewritten = raw.replace(b"event 17", b"event 71")
        assert rewritten != raw
        await thief.client.put(victim, rewritten)
        await _reseal_without_the_key(thief)
        hashes_only = await verify(thief)
        assert hashes_only.ok  # all the old seals could say
    audit = await asyncio.to_thread(
        corral, etcd, "auditor", "audit", "verify", "--seal-keys", str(public_dir)
    )
    assert audit.returncode == 1, audit.stdout + audit.stderr
    assert "FAILED" in audit.stdout and "signature" in audit.stdout and "rewritten" in audit.stdout
    # The honest log verifies with the keys, also after a key rotation: seals made
    # with the old key still verify while its public key stays trusted.
    async with EventStore.connect(
        [etcd.endpoint], "c2", credentials=etcd.credentials("orchestrator")
    ) as store:
        await store.append(events[:5])
        await seal_pending(store, signer=signer, final=True)
        new_key_pair(tmp_path / "seal2.key", public_dir)
        await store.append(events[5:10])
        await seal_pending(store, signer=SealSigner.from_file(tmp_path / "seal2.key"), final=True)
    ok = await asyncio.to_thread(
        corral,
        etcd,
        "auditor",
        "audit",
        "verify",
        "--cluster",
        "c2",
        "--seal-keys",
        str(public_dir),
        "--json",
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["ok"] and doc["signed"] == 2 and doc["keyed"]
