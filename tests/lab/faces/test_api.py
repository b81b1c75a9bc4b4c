"""The native HTTP API as clients use it: tokens and roles, the read views, a
desired-state file applied over HTTP until its VMs run on the simulated hosts, an
instance stopped over HTTP until its VM is gone from its host, the event stream
resuming with Last-Event-ID, scoped tokens that see only their instances, bad
bodies answered with 4xx naming the field, and never a 5xx. Also the tokens file
and the Prometheus text format on their own."""

from __future__ import annotations

import asyncio
import json
import re
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from devtools.local_etcd import LocalEtcd
from events.ids import EventId, InstanceName
from events.model import Event, InstanceDeclared, PolicySet
from events.projection import fold_all
from events.specs import ClusterPolicy, DiskSpec, InstanceSpec
from events.state import ClusterState
from events.store import EventStore
from orchestrator.api.auth import (
    ApiAuth,
    AuthFailure,
    TokensFileError,
    add_token,
    hash_token,
    load_tokens,
    new_token_entry,
    parse_tokens,
)
from orchestrator.api.metrics import ApiMetrics
from orchestrator.api.server import build_app, start_api
from orchestrator.roles import Role
from tests.support.cluster.cluster_harness import Cluster, cluster, eid
from tests.support.cluster.events import cluster_yaml

INSTANCES = """  - name: web1
    memory: 512M
    vcpus: 1
    disks: [10G]
    tags: ["owner:alice"]
  - name: web2
    memory: 512M
    vcpus: 1
    disks: [10G]
    tags: ["owner:bob"]
  - name: db1
    memory: 1G
    vcpus: 2
    disks: [20G]
"""
INSTANCE_ACTIONS = (
    "start", "stop", "reboot", "migrate", "failover", "replace-disks", "grow-disk",
    "activate-disks",
)  # fmt: skip
NODE_ACTIONS = (
    "drain", "undrain", "offline", "online", "evacuate", "migrate", "failover", "confirm-off",
)  # fmt: skip
# A sample line of the text exposition format: name{labels} value
_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
    r"(-?[0-9.]+(e[+-]?[0-9]+)?|NaN|\+Inf|-Inf)$"
)


def make_auth() -> tuple[ApiAuth, dict[str, str]]:
    tokens: dict[str, str] = {}
    entries = []
    for name, role, tags in (
        ("admin", Role.ADMIN, ()),
        ("operator", Role.OPERATOR, ()),
        ("viewer", Role.VIEWER, ()),
        ("alice", Role.OPERATOR, ("owner:alice",)),
    ):
        token, entry = new_token_entry(name=name, role=role, scope_tags=tags)
        tokens[name] = token
        entries.append(entry)
    return ApiAuth(entries=tuple(entries)), tokens


@dataclass
class Api:
    base: str
    session: aiohttp.ClientSession
    tokens: dict[str, str]
    statuses: list[tuple[str, str, int]] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        *,
        who: str | None = "admin",
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        h = dict(headers or {})
        if who is not None:
            h["Authorization"] = f"Bearer {self.tokens.get(who, who)}"
        kwargs: dict[str, Any] = {"headers": h}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            self.statuses.append((method, path, resp.status))
            assert resp.status < 500, (method, path, resp.status, text)
            assert "Traceback" not in text
            assert "Access-Control-Allow-Origin" not in resp.headers
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(text) if ctype.startswith("application/json") else text


@asynccontextmanager
async def running_api(
    *, state: Any, store: EventStore, heartbeat_s: float = 15.0
) -> AsyncIterator[Api]:
    auth, tokens = make_auth()
    runner = await start_api(
        host="127.0.0.1",
        port=0,
        state=state,
        store=store,
        auth=auth,
        metrics=ApiMetrics(),
        heartbeat_s=heartbeat_s,
    )
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            yield Api(base=f"http://{host}:{port}", session=session, tokens=tokens)
    finally:
        await runner.cleanup()


def files(c: Cluster, instances: str) -> dict[str, Any]:
    return {"files": [{"name": "cluster.yaml", "text": cluster_yaml(c, instances)}]}


async def wait_job(api: Api, job_id: str, *, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = await api.call("GET", f"/api/v1/jobs/{job_id}")
        assert status == 200
        if job["status"] in ("success", "error", "canceled"):
            return dict(job)
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end: {job}")


# ---------------------------------------------------------------------- the whole API


async def test_api_drives_a_cluster_with_roles_scopes_and_bad_input(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        engine = await c.start_engine()
        async with running_api(state=lambda: engine.state, store=c.store) as api:
            await _auth_and_roles_before_apply(api, c)
            revision_before = engine.state.revision
            await _apply_over_http(api, c, engine_state=lambda: engine.state)
            await _reads(api, revision_before=revision_before)
            await _viewer_and_scoped(api)
            await _operator_stops_web1(api, c)
            await _bad_input(api)
            await _metrics(api)
            assert all(s < 500 for _, _, s in api.statuses)
            assert len(api.statuses) > 80


async def _auth_and_roles_before_apply(api: Api, c: Cluster) -> None:
    status, body = await api.call("GET", "/api/v1/status", who=None)
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    status, body = await api.call("GET", "/api/v1/status", who="not-a-token")
    assert status == 401
    status, body = await api.call(
        "GET", "/api/v1/status", headers={"Authorization": "Basic eA=="}, who=None
    )
    assert status == 401
    status, doc = await api.call("GET", "/api/v1/openapi.json", who=None)
    assert status == 200 and doc["openapi"].startswith("3.1")
    status, page = await api.call("GET", "/", who=None)  # the dashboard's page holds no data
    assert status == 200 and "<html" in page.lower()
    assert (await api.call("GET", "/dashboard/tokens.yaml", who=None))[0] == 404
    assert (await api.call("POST", "/", who=None))[0] == 401
    for who in ("viewer", "operator", "alice"):
        status, body = await api.call(
            "POST", "/api/v1/desired/apply", who=who, body=files(c, INSTANCES)
        )
        assert status == 403, (who, body)
        assert body["error"]["code"] == "forbidden"
    status, body = await api.call(
        "POST", "/api/v1/desired/plan", who="alice", body=files(c, INSTANCES)
    )
    assert status == 403


async def _apply_over_http(api: Api, c: Cluster, *, engine_state: Any) -> None:
    bad = cluster_yaml(c, INSTANCES).replace("memory: 1G", "memory: lots")
    bad = bad.replace("  - name: web2", "  - name: 'web2; rm -rf /'")
    for path in ("/api/v1/desired/plan", "/api/v1/desired/apply"):
        status, body = await api.call(
            "POST", path, body={"files": [{"name": "bad.yaml", "text": bad}]}
        )
        assert status == 422, body
        assert body["error"]["code"] == "invalid_desired_state"
        fields = {p["field"] for p in body["problems"]}
        assert any("memory" in f for f in fields), fields
        assert all(p["file"] == "bad.yaml" and p["line"] > 0 for p in body["problems"])
        assert any("web2" in p["field"] + p["message"] for p in body["problems"])
    status, plan = await api.call("POST", "/api/v1/desired/plan", body=files(c, INSTANCES))
    assert status == 200 and plan["has_changes"] and not plan["problems"]
    created = {ch["name"]: ch for ch in plan["changes"] if ch["kind"] == "instance"}
    assert set(created) == {"web1", "web2", "db1"}
    assert all(ch["placement"]["primary"] for ch in created.values())

    status, applied = await api.call(
        "POST", "/api/v1/desired/apply", body={**files(c, INSTANCES), "message": "first cut"}
    )
    assert status == 202, applied
    assert applied["changes"] == 8 and applied["job_id"] is None and applied["event_ids"]
    assert engine_state().revision >= applied["revision"]  # read-your-writes
    await c.wait_for(
        "web1, web2, db1 running on one host each",
        lambda: all(len(c.running_on(n)) == 1 for n in ("web1", "web2", "db1")),
        timeout=90,
    )
    await c.wait_for("convergence", lambda: c.converged(), timeout=90)
    status, again = await api.call("POST", "/api/v1/desired/apply", body=files(c, INSTANCES))
    assert status == 200 and again["changes"] == 0
    history = (await api.call("GET", "/api/v1/events?type=desired.applied"))[1]
    assert [e["actor"] for e in history] == ["api:admin"]
    assert history[0]["message"] == "first cut"


async def _reads(api: Api, *, revision_before: int) -> None:
    status, st = await api.call("GET", "/api/v1/status")
    assert status == 200 and st["cluster"] == "lab"
    assert st["instances"]["by_status"] == {"running": 3}
    assert st["nodes"]["total"] == 4 and st["last_apply"]["author"] == "api:admin"
    _, rows = await api.call("GET", "/api/v1/instances")
    assert [r["name"] for r in rows] == ["db1", "web1", "web2"]
    assert all(r["status"] == "running" and r["primary"] for r in rows)
    _, info = await api.call("GET", "/api/v1/instances/web1")
    assert info["tags"] == ["owner:alice"] and info["power"] == "running"
    assert info["disks"][0]["size_mib"] == 10240
    _, nodes = await api.call("GET", "/api/v1/nodes")
    assert [n["name"] for n in nodes] == ["node1", "node2", "node3", "node4"]
    assert sum(n["primaries"] for n in nodes) == 3
    primary = info["primary"]
    _, node = await api.call("GET", f"/api/v1/nodes/{primary}")
    assert "web1" in node["instances_primary"] and node["fence_agent"] == "fence_corral_sim"
    assert (await api.call("GET", "/api/v1/nodes/node9"))[0] == 404
    assert (await api.call("GET", "/api/v1/instances/nosuch"))[0] == 404
    assert (await api.call("GET", "/api/v1/instances/..%2Fetc"))[0] == 404
    _, verify = await api.call("GET", "/api/v1/verify")
    assert verify["errors"] == 0, verify
    _, desired = await api.call("GET", "/api/v1/desired")
    assert desired["cluster"] == "lab" and len(desired["nodes"]) == 4
    assert [i["name"] for i in desired["instances"]] == ["db1", "web1", "web2"]
    _, events = await api.call("GET", "/api/v1/events?object=web1&type=instance.&limit=3")
    assert 1 <= len(events) <= 3
    assert all(
        "instance/web1" in e["objects"] and e["type"].startswith("instance.") for e in events
    )
    revisions = [e["revision"] for e in events]
    assert revisions == sorted(revisions)
    _, recent = await api.call("GET", "/api/v1/events?since=1h&type=node.declared")
    assert len(recent) == 4
    _, past = await api.call("GET", f"/api/v1/state?at={revision_before}")
    assert past["revision"] <= revision_before and past["instances"]["total"] == 0
    _, now = await api.call("GET", f"/api/v1/state?at={st['revision']}")
    assert now["instances"] == st["instances"]


async def _viewer_and_scoped(api: Api) -> None:
    _, jobs = await api.call("GET", "/api/v1/jobs?all=true")
    some_job = jobs[0]["job_id"] if jobs else "0000000000000-abcdef"
    for action in INSTANCE_ACTIONS:
        status, body = await api.call(
            "POST", f"/api/v1/instances/web1/{action}", who="viewer", body={}
        )
        assert status == 403, (action, body)
    for action in NODE_ACTIONS:
        status, _ = await api.call(
            "POST", f"/api/v1/nodes/node1/{action}", who="viewer", body={"reason": "x"}
        )
        assert status == 403, action
    assert (await api.call("POST", f"/api/v1/jobs/{some_job}/cancel", who="viewer"))[0] == 403
    assert (await api.call("GET", "/api/v1/instances", who="viewer"))[0] == 200
    # operator: node operations yes, confirm-off (admin) no
    status, _ = await api.call(
        "POST", "/api/v1/nodes/node4/confirm-off", who="operator", body={"reason": "I saw it"}
    )
    assert status == 403
    # Scoped to owner:alice: only web1 exists for her.
    _, rows = await api.call("GET", "/api/v1/instances", who="alice")
    assert [r["name"] for r in rows] == ["web1"]
    for name in ("web2", "db1"):
        assert (await api.call("GET", f"/api/v1/instances/{name}", who="alice"))[0] == 404
        status, _ = await api.call("POST", f"/api/v1/instances/{name}/stop", who="alice")
        assert status == 404
    assert (await api.call("GET", "/api/v1/instances/web1", who="alice"))[0] == 200
    for action in ("drain", "evacuate"):
        assert (await api.call("POST", f"/api/v1/nodes/node1/{action}", who="alice"))[0] == 403
    _, st = await api.call("GET", "/api/v1/status", who="alice")
    assert st["instances"]["total"] == 1
    _, events = await api.call("GET", "/api/v1/events", who="alice")
    assert events, "alice sees the events of web1"
    for e in events:
        assert "instance/web1" in e["objects"] or any(o.startswith("job/") for o in e["objects"]), e
    _, desired = await api.call("GET", "/api/v1/desired", who="alice")
    assert [i["name"] for i in desired["instances"]] == ["web1"] and desired["nodes"] == []
    _, node = await api.call("GET", "/api/v1/nodes/node1", who="alice")
    assert set(node["instances_primary"]) <= {"web1"}
    assert (await api.call("GET", "/metrics", who="alice"))[0] == 403


async def _operator_stops_web1(api: Api, c: Cluster) -> None:
    status, accepted = await api.call(
        "POST", "/api/v1/instances/web1/stop", who="operator", body={"reason": "maintenance"}
    )
    assert status == 202, accepted
    assert accepted["job_id"] and accepted["revision"] > 0 and len(accepted["event_ids"]) == 2
    job = await wait_job(api, accepted["job_id"])
    assert job["status"] == "success", job
    assert job["actor"] == "api:operator" and job["reason"] == "maintenance"
    await c.wait_for("web1 stopped on its host", lambda: c.running_on("web1") == [])
    assert len(c.running_on("web2")) == 1
    _, events = await api.call("GET", "/api/v1/events?object=web1&type=instance.power_set")
    assert [e["actor"] for e in events] == ["api:operator"]
    # alice may operate her own instance
    status, started = await api.call("POST", "/api/v1/instances/web1/start", who="alice")
    assert status == 202
    job = await wait_job(api, started["job_id"])
    assert job["status"] == "success" and job["actor"] == "api:alice"
    await c.wait_for("web1 running again", lambda: len(c.running_on("web1")) == 1)
    _, mine = await api.call("GET", "/api/v1/jobs", who="alice")
    assert mine and all(j["targets"] == ["instance/web1"] for j in mine)
    # a finished job cannot be canceled
    status, body = await api.call("POST", f"/api/v1/jobs/{started['job_id']}/cancel")
    assert status == 409 and body["error"]["field"] == "job_id"
    # node flags round-trip through the state
    assert (await api.call("POST", "/api/v1/nodes/node4/drain", who="operator"))[0] == 202
    _, node = await api.call("GET", "/api/v1/nodes/node4")
    assert node["flags"] == ["drained"]
    assert (await api.call("POST", "/api/v1/nodes/node4/undrain", who="operator"))[0] == 202
    _, node = await api.call("GET", "/api/v1/nodes/node4")
    assert node["flags"] == []


async def _bad_input(api: Api) -> None:
    cases: list[tuple[str, Any, bytes | None, int, str | None]] = [
        ("/api/v1/instances/web2/grow-disk", {}, None, 422, "amount_mib"),
        ("/api/v1/instances/web2/grow-disk", {"amount_mib": "10G"}, None, 422, "amount_mib"),
        ("/api/v1/instances/web2/grow-disk", {"amount_mib": 0}, None, 422, "amount_mib"),
        ("/api/v1/instances/web2/grow-disk", {"amount_mib": 1024, "disk": 3}, None, 422, "disk"),
        ("/api/v1/instances/web2/grow-disk", {"amount_mib": True}, None, 422, "amount_mib"),
        ("/api/v1/instances/web2/stop", None, b"{not json", 400, "body"),
        ("/api/v1/instances/web2/stop", [1, 2], None, 422, "body"),
        ("/api/v1/instances/web2/stop", {"bogus": 1}, None, 422, "bogus"),
        ("/api/v1/instances/web2/stop", {"reason": 5}, None, 422, "reason"),
        ("/api/v1/instances/web2/replace-disks", {"mode": "sideways"}, None, 422, "mode"),
        ("/api/v1/instances/web2/replace-disks", {"new_secondary": "node9"}, None, 422,
         "new_secondary"),
        ("/api/v1/instances/web2/replace-disks", {"new_secondary": "../x"}, None, 422,
         "new_secondary"),
        ("/api/v1/instances/web2/explode", {}, None, 404, "action"),
        ("/api/v1/instances/nosuch/stop", {}, None, 404, "name"),
        ("/api/v1/nodes/node9/drain", {}, None, 404, "name"),
        ("/api/v1/nodes/node1/confirm-off", {}, None, 422, "reason"),
        ("/api/v1/nodes/node1/reboot-it", {}, None, 404, "action"),
        ("/api/v1/jobs/nope/cancel", {}, None, 404, "job_id"),
        ("/api/v1/desired/apply", {}, None, 422, "files"),
        ("/api/v1/desired/apply", {"files": "x"}, None, 422, "files"),
        ("/api/v1/desired/apply", {"files": []}, None, 422, "files"),
        ("/api/v1/desired/apply", {"files": [{"name": "a"}]}, None, 422, "files[0].text"),
        ("/api/v1/desired/apply", {"files": [{"name": "a", "text": "x", "mode": 1}]}, None,
         422, "files[0].mode"),
        ("/api/v1/desired/plan", {"files": [{"name": "a", "text": ""}], "allow_destroy": "y"},
         None, 422, "allow_destroy"),
        ("/api/v1/desired/plan", None, b"x" * (1024 * 1024 + 10), 413, "body"),
    ]  # fmt: skip
    before = (await api.call("GET", "/api/v1/status"))[1]["revision"]
    for path, body, raw, want, fld in cases:
        status, got = await api.call("POST", path, body=body, raw=raw)
        assert status == want, (path, body, got)
        assert got["error"]["field"] == fld, (path, got)
        assert got["error"]["message"]
    assert (await api.call("GET", "/api/v1/status"))[1]["revision"] == before
    for path, fld in (
        ("/api/v1/events?since=yesterday-ish", "since"),
        ("/api/v1/events?limit=0", "limit"),
        ("/api/v1/events?limit=abc", "limit"),
        ("/api/v1/state", "at"),
        ("/api/v1/state?at=-1", "at"),
        ("/api/v1/jobs?all=maybe", "all"),
    ):
        status, got = await api.call("GET", path)
        assert status == 422 and got["error"]["field"] == fld, (path, got)
    status, got = await api.call("GET", "/api/v1/nothing-here")
    assert status == 404 and got["error"]["code"] == "not_found"
    status, got = await api.call("DELETE", "/api/v1/instances/web1")
    assert status == 405 and got["error"]["code"] == "method_not_allowed"


async def _metrics(api: Api) -> None:
    status, text = await api.call("GET", "/metrics")
    assert status == 200 and isinstance(text, str)
    lines = text.splitlines()
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or _SAMPLE.match(line), line
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line[0] != "#"
    }
    assert samples['corral_node_memory_mib{node="node1"}'] > 0
    assert sum(v for k, v in samples.items() if k.startswith("corral_node_primaries{")) == 3
    assert samples['corral_instances{status="running"}'] == 3
    assert samples["corral_instances_degraded"] == 0
    assert samples['corral_node_health{health="online",node="node1"}'] == 1
    assert samples['corral_api_auth_failures_total{reason="unknown"}'] >= 1
    assert samples['corral_api_auth_failures_total{reason="missing"}'] >= 1
    assert samples["corral_event_log_revision"] > 0
    assert samples['corral_jobs{kind="instance.stop",status="success"}'] == 1
    assert samples['corral_job_duration_seconds_count{kind="instance.stop",status="success"}'] == 1
    drbd = [k for k in samples if k.startswith("corral_drbd_resources{")]
    assert drbd and all('connection="Connected"' in k for k in drbd), drbd
    assert any(k.startswith("corral_drbd_sync_percent{") for k in samples)
    assert any(
        k.startswith('corral_api_requests_total{method="POST",route="/api/v1/desired/apply"')
        for k in samples
    )


# ---------------------------------------------------------------------- event stream


async def _frames(
    resp: aiohttp.ClientResponse, n: int, *, timeout: float = 15
) -> list[tuple[str, dict[str, Any]]]:
    frames: list[tuple[str, dict[str, Any]]] = []
    event_id, data = "", None
    async with asyncio.timeout(timeout):
        while len(frames) < n:
            raw = await resp.content.readline()
            assert raw, "stream ended"
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                frames.append((event_id, data))
                event_id, data = "", None
    return frames


def _instance(name: str, *tags: str) -> InstanceDeclared:
    spec = InstanceSpec(
        name=InstanceName(name),
        memory_mib=512,
        vcpus=1,
        disks=(DiskSpec(size_mib=1024),),
        tags=frozenset(tags),
    )
    return InstanceDeclared(id=eid(), time=time.time(), actor="test", spec=spec)


async def test_event_stream_resumes_without_loss_or_duplicates(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "lab", credentials=etcd.credentials()) as store:
        holder: dict[str, ClusterState] = {"state": ClusterState()}

        async def append(events: list[Event]) -> int:
            revision = await store.append(events)
            holder["state"] = fold_all([(r, e) async for r, e in store.read_all()])
            return revision

        await append(
            [
                PolicySet(
                    id=EventId(eid()), time=time.time(), actor="t", cluster_name="lab",
                    policy=ClusterPolicy(),
                ),
                _instance("a1", "owner:alice"),
                _instance("b1", "owner:bob"),
            ]
        )  # fmt: skip
        async with running_api(state=lambda: holder["state"], store=store, heartbeat_s=0.3) as api:
            url = api.base + "/api/v1/events/stream"
            admin = {"Authorization": f"Bearer {api.tokens['admin']}"}
            async with api.session.get(url) as resp:
                assert resp.status == 401
            async with api.session.get(url + "?since=1", headers=admin) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                assert "Access-Control-Allow-Origin" not in resp.headers
                first = await _frames(resp, 2)  # stop in the middle of one append
            assert first[0][0] == f"{first[0][1]['revision']}.0"
            assert first[1][0] == f"{first[0][1]['revision']}.1"
            # While nobody listens, more is appended (one append of 3, then one of 1).
            await append([_instance("a2", "owner:alice"), _instance("b2"), _instance("c3")])
            await append([_instance("a3", "owner:alice")])
            resume = {**admin, "Last-Event-ID": first[-1][0]}
            async with api.session.get(url, headers=resume) as resp:
                assert resp.status == 200
                rest = await _frames(resp, 5)
                # live: appended while connected
                await append([_instance("b4", "owner:bob")])
                live = await _frames(resp, 1)
            got = [d["id"] for _, d in first + rest + live]
            stored = [e.id async for _, e in store.read_all()]
            assert got == stored  # every event, in order, none twice
            ids = [i for i, _ in first + rest + live]
            assert len(set(ids)) == len(ids)

            # Resuming after a whole revision ("812") and with a type filter.
            rev_a3 = next(d["revision"] for _, d in rest if d["spec"]["name"] == "a3")
            async with api.session.get(
                url + "?type=instance.declared", headers={**admin, "Last-Event-ID": str(rev_a3)}
            ) as resp:
                after = await _frames(resp, 1)
            assert [d["spec"]["name"] for _, d in after] == ["b4"]

            # Idle connections get heartbeat comments.
            async with api.session.get(url, headers=admin) as resp:
                async with asyncio.timeout(5):
                    while (await resp.content.readline()) != b": heartbeat\n":
                        pass

            # A scoped token only gets events about its own instances.
            alice = {"Authorization": f"Bearer {api.tokens['alice']}"}
            async with api.session.get(url + "?since=1", headers=alice) as resp:
                mine = await _frames(resp, 3)
            assert [d["spec"]["name"] for _, d in mine] == ["a1", "a2", "a3"]

            bad = {**admin, "Last-Event-ID": "yesterday"}
            status, body = await api.call("GET", "/api/v1/events/stream", headers=bad, who=None)
            assert status == 422 and body["error"]["field"] == "Last-Event-ID"


# ---------------------------------------------------------------------- tokens and metrics


async def test_unexpected_errors_become_a_json_500_without_traceback() -> None:
    def broken() -> ClusterState:
        raise RuntimeError("secret internals")

    auth, tokens = make_auth()
    app = build_app(state=broken, store=cast(EventStore, None), auth=auth)
    async with TestClient(TestServer(app)) as client:
        headers = {"Authorization": f"Bearer {tokens['viewer']}"}
        resp = await client.get("/api/v1/status", headers=headers)
        assert resp.status == 500
        body = await resp.json()
        assert body == {
            "error": {
                "code": "internal",
                "message": "internal error; the orchestrator's log has details",
                "field": None,
            }
        }
        text = await resp.text()
        assert "secret internals" not in text and "Traceback" not in text
        resp = await client.get("/metrics", headers=headers)
        assert resp.status == 500  # the state is broken for every view


def test_tokens_file_create_load_and_authenticate(tmp_path: Path) -> None:
    for path in (tmp_path / "tokens.yaml", tmp_path / "tokens.json"):
        admin = add_token(path, name="ci", role=Role.ADMIN)
        alice = add_token(path, name="alice", role=Role.OPERATOR, scope_tags=["owner:alice"])
        assert admin.startswith("corral_") and admin != alice
        text = path.read_text()
        assert admin not in text and alice not in text and hash_token(admin) in text
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        if path.suffix == ".json":
            assert json.loads(text)[1]["scope_tags"] == ["owner:alice"]
        auth = ApiAuth.from_file(path)
        got = auth.authenticate(f"Bearer {admin}")
        assert got.principal is not None and got.principal.name == "api:ci"
        assert got.principal.role is Role.ADMIN and not got.principal.scoped
        scoped = auth.authenticate(f"bearer {alice}").principal
        assert scoped is not None and scoped.scope_tags == frozenset({"owner:alice"})
        assert auth.authenticate(None).failure is AuthFailure.MISSING
        assert auth.authenticate("Basic Y2k6eA==").failure is AuthFailure.MALFORMED
        assert auth.authenticate("Bearer " + "x" * 600).failure is AuthFailure.MALFORMED
        assert auth.authenticate(f"Bearer {admin}x").failure is AuthFailure.UNKNOWN
        with pytest.raises(TokensFileError, match="already exists"):
            add_token(path, name="ci", role=Role.VIEWER)
        assert len(load_tokens(path)) == 2
    digest = "a" * 64
    bad_files = {
        "[{name: x, role: root, token_sha256: " + digest + "}]": "role must be one of",
        "[{name: x, role: admin, token_sha256: abc}]": "64 lowercase hex",
        "[{name: 'X Y', role: admin, token_sha256: " + digest + "}]": "name",
        "[{name: x, role: admin}]": "token_sha256",
        "[{name: x, role: admin, token_sha256: " + digest + ", extra: 1}]": "unknown field",
        "[{name: x, role: admin, token_sha256: " + digest + ", scope_tags: 'owner:a'}]": "list",
        "{name: x}": "expected a list",
        "[{name: x, role: admin, token_sha256: " + digest + "}, "
        "{name: x, role: viewer, token_sha256: " + "b" * 64 + "}]": "appears twice",
        "[1": "not YAML or JSON",
    }
    for text, message in bad_files.items():
        with pytest.raises(TokensFileError, match=message):
            parse_tokens(text, source="t.yaml")
    assert parse_tokens("tokens: []") == ()
    with pytest.raises(TokensFileError, match="cannot read"):
        load_tokens(tmp_path / "missing.yaml")
