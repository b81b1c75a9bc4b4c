"""The Ganeti RAPI v2 server against real Ganeti software: Debian's
`python3-ganeti-rapi` client (run by the system Python in a subprocess) creates,
stops, starts, migrates, fails over and tags an instance and evacuates a node on
a simulated cluster, and htools (`hbal -m`, `hspace -m`) load the live cluster
over HTTPS. Role tests check that viewers cannot write and scoped users see only
their own instances. Assertions look at the simulated hosts and at what the
clients print."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import ssl
import subprocess
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from argon2 import PasswordHasher

from events.ids import InstanceName, NodeName
from events.specs import DiskSpec, InstanceSpec
from orchestrator.rapi.server import start_rapi
from orchestrator.rapi.users import RapiUsers, UsersFileError, parse_users
from orchestrator.roles import Role
from tests.support.cluster.cluster_harness import Cluster, cluster

SYSTEM_PYTHON = "/usr/bin/python3"
CLIENT_MODULE = Path("/usr/lib/python3/dist-packages/ganeti/rapi/client.py")
HTOOLS = Path("/usr/lib/ganeti/3.0/usr/bin")

# argon2id with cheap parameters (the hash string carries them): tests stay fast.
_CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
USERS = textwrap.dedent(
    f"""\
    # Ganeti users file (argon2id and Ganeti's HA1), plus corral's admin and scope=
    root  {{ARGON2}}{_CHEAP.hash("rootpw")}  write,admin
    ops   {_CHEAP.hash("opspw")}              write
    view  {{HA1}}{hashlib.md5(b"view:Ganeti Remote API:viewpw").hexdigest()}
    alice {{argon2}}{_CHEAP.hash("alicepw")}            write,scope=owner:alice
    """
)

DRIVER = textwrap.dedent(
    """\
    import json, sys
    import pycurl
    from ganeti.rapi import client
    pycurl.global_init(pycurl.GLOBAL_ALL)
    host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    c = client.GanetiRapiClient(host, port=port, username=user, password=password,
                                curl_config_fn=client.GenericCurlConfig(timeout=60))
    for line in sys.stdin:
        req = json.loads(line)
        try:
            out = {"ok": getattr(c, req["m"])(*req.get("a", []), **req.get("k", {}))}
        except client.GanetiApiError as err:
            out = {"error": str(err), "code": err.code}
        sys.stdout.write(json.dumps(out) + "\\n")
        sys.stdout.flush()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_debian(path: Path, package: str) -> None:
    if not path.exists():
        pytest.skip(f"{path} not installed (Debian package {package})")


class StockClient:
    """Ganeti's own RAPI client, one call per JSON line, in the system Python."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        got = await self.try_call(method, *args, **kwargs)
        assert "ok" in got, f"{method}{args}: {got}"
        return got["ok"]

    async def try_call(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"m": method, "a": args, "k": kwargs}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 180)
        assert line, f"the client died during {method}"
        result: dict[str, Any] = json.loads(line)
        return result

    async def run_job(self, job_id: Any) -> dict[str, Any]:
        assert isinstance(job_id, int), job_id
        ok = await self.call("WaitForJobCompletion", job_id, period=0.3, retries=400)
        status: dict[str, Any] = await self.call("GetJobStatus", job_id)
        assert ok, status
        return status


@asynccontextmanager
async def stock_client(
    tmp: Path, port: int, user: str, password: str
) -> AsyncIterator[StockClient]:
    script = tmp / "rapi_driver.py"
    script.write_text(DRIVER)
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        str(script),
        "127.0.0.1",
        str(port),
        user,
        password,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield StockClient(proc)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@asynccontextmanager
async def rapi(c: Cluster, users: RapiUsers, *, anonymous_reads: bool = True) -> AsyncIterator[int]:
    port = free_port()

    def state() -> Any:
        assert c.engine is not None
        return c.engine.state

    runner: web.AppRunner = await start_rapi(
        host="127.0.0.1",
        port=port,
        state=state,
        store=c.store,
        users=users,
        cert_dir=c.tmp / "rapi-cert",
        anonymous_reads=anonymous_reads,
    )
    try:
        yield port
    finally:
        await runner.cleanup()


async def htools(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(HTOOLS / tool), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_users_file_format() -> None:
    users = parse_users(USERS)
    assert users["root"].role is Role.ADMIN
    assert users["ops"].role is Role.OPERATOR
    assert users["view"].role is Role.VIEWER and users["view"].scheme == "ha1"
    assert users["alice"].scope_tags == frozenset({"owner:alice"})
    assert users["view"].check("viewpw") and not users["view"].check("viewpw ")
    assert users["root"].check("rootpw") and not users["root"].check("{CLEARTEXT}rootpw")
    assert users["ops"].scheme == "argon2" and "opspw" not in USERS
    for cleartext in ("bob secret write", "bob {CLEARTEXT}secret write"):
        with pytest.raises(UsersFileError, match="cleartext passwords are not accepted") as bad:
            parse_users(cleartext)
        assert "secret" not in str(bad.value).replace("cleartext", "")
    with pytest.raises(UsersFileError, match=r"users file:1 .*unknown option 'delete'"):
        parse_users("bob {HA1}" + "0" * 32 + " delete")
    with pytest.raises(UsersFileError, match="32 hex digits") as info:
        parse_users("bob {HA1}abc")
    assert "abc" not in str(info.value).replace("32 hex", "")

    rapi_users = RapiUsers.from_text(USERS)
    basic = "Basic " + base64.b64encode(b"ops:wrong").decode()
    assert rapi_users.authenticate(basic).error == "bad-password"
    nobody = "Basic " + base64.b64encode(b"nobody:x").decode()
    assert rapi_users.authenticate(nobody).error == "unknown-user"
    assert rapi_users.authenticate("Bearer abc").error == "malformed"
    good = rapi_users.authenticate("Basic " + base64.b64encode(b"ops:opspw").decode())
    assert good.principal is not None and good.principal.name == "rapi:ops"
    assert rapi_users.stats.failures == 3
    assert rapi_users.failed.failures("") == 3  # counted by client address


async def test_stock_client_and_htools_drive_corral(tmp_path: Path) -> None:
    require_debian(CLIENT_MODULE, "python3-ganeti-rapi")
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.start_engine()
        users = RapiUsers.from_text(USERS)
        async with rapi(c, users) as port, stock_client(tmp_path, port, "root", "rootpw") as gc:
            assert await gc.call("GetVersion") == 2
            features = await gc.call("GetFeatures")
            assert {"instance-create-reqv1", "node-evac-res1", "node-migrate-reqv1"} <= set(
                features
            )
            info = await gc.call("GetInfo")
            assert info["name"] == "lab" and info["master"] == "node1"
            nodes = await gc.call("GetNodes", bulk=True)
            assert sorted(n["name"] for n in nodes) == ["node1", "node2", "node3", "node4"]
            assert all(n["mtotal"] > n["mfree"] > 0 and n["dfree"] == n["dtotal"] for n in nodes)

            # Create a DRBD instance; the job ends with it running on its primary.
            job = await gc.call(
                "CreateInstance",
                "create",
                "web1",
                "drbd",
                [{"size": 2048}],
                [{"link": "br0"}],
                beparams={"maxmem": 512, "vcpus": 1},
                os="debian-image",
                iallocator="hail",
                tags=["owner:bob"],
            )
            status = await gc.run_job(job)
            assert status["ops"][0]["OP_ID"] == "OP_INSTANCE_CREATE"
            inst = await gc.call("GetInstance", "web1")
            assert inst["status"] == "running" and inst["disk_template"] == "drbd"
            assert inst["disk.sizes"] == [2048] and inst["beparams"]["maxmem"] == 512
            pnode, snode = inst["pnode"], inst["snodes"][0]
            assert status["opresult"] == [[pnode, snode]]
            assert c.running_on("web1") == [pnode]

            # Shutdown and startup.
            await gc.run_job(await gc.call("ShutdownInstance", "web1"))
            assert (await gc.call("GetInstance", "web1"))["status"] == "ADMIN_down"
            assert c.running_on("web1") == []
            await gc.run_job(await gc.call("StartupInstance", "web1"))
            assert c.running_on("web1") == [pnode]

            # Live migration, then failover back.
            await gc.run_job(await gc.call("MigrateInstance", "web1"))
            inst = await gc.call("GetInstance", "web1")
            assert (inst["pnode"], inst["snodes"]) == (snode, [pnode])
            await c.wait_for("running after migrate", lambda: c.running_on("web1") == [snode])
            await gc.run_job(await gc.call("FailoverInstance", "web1"))
            inst = await gc.call("GetInstance", "web1")
            assert (inst["pnode"], inst["snodes"]) == (pnode, [snode])
            await c.wait_for("running after failover", lambda: c.running_on("web1") == [pnode])

            # Tags.
            await gc.run_job(await gc.call("AddInstanceTags", "web1", ["service:web"]))
            assert await gc.call("GetInstanceTags", "web1") == ["owner:bob", "service:web"]

            # Evacuate the primary's node: the instance leaves it entirely.
            evac = await gc.call("EvacuateNode", pnode, mode="all")
            await gc.run_job(evac)
            inst = await gc.call("GetInstance", "web1")
            assert pnode not in (inst["pnode"], *inst["snodes"])
            await c.wait_for(
                "running off the evacuated node",
                lambda: c.running_on("web1") == [inst["pnode"]],
            )
            node = await gc.call("GetNode", pnode)
            assert node["pinst_cnt"] == 0 and node["sinst_cnt"] == 0

            # Node roles.
            await gc.run_job(await gc.call("SetNodeRole", pnode, "drained"))
            assert await gc.call("GetNodeRole", pnode) == "drained"
            await gc.run_job(await gc.call("SetNodeRole", pnode, "regular"))
            assert await gc.call("GetNodeRole", pnode) in ("regular", "master")

            # Jobs: all listed, all finished successfully.
            jobs = await gc.call("GetJobs")
            assert job in jobs and evac in jobs and len(jobs) >= 8
            for jid in jobs:
                st = await gc.call("GetJobStatus", jid)
                assert st["status"] == "success", st
                assert st["received_ts"][0] > 0 and st["end_ts"] is not None
            changed = await gc.call("WaitForJobChange", evac, ["status"], None, None)
            assert changed["job_info"] == ["success"] and changed["log_entries"]

            # Errors come back as Ganeti API errors with Ganeti's codes.
            missing = await gc.try_call("GetInstance", "nope")
            assert missing["code"] == 404 and "not found" in missing["error"]
            bad = await gc.try_call("SetNodeRole", pnode, "master-candidate")
            assert bad["code"] == 400

            # htools read the live cluster over HTTPS (anonymously, as in Ganeti).
            require_debian(HTOOLS / "hbal", "ganeti-htools-3.0")
            await gc.run_job(
                await gc.call(
                    "CreateInstance",
                    "create",
                    "db1",
                    "drbd",
                    [{"size": 1024}],
                    [],
                    beparams={"memory": 1024, "vcpus": 2},
                )
            )
            url = f"https://127.0.0.1:{port}"
            hbal = await htools("hbal", "-m", url, "-v")
            assert hbal.returncode == 0, hbal.stderr
            out = hbal.stdout + hbal.stderr
            assert re.search(r"Loaded 4 nodes, 2 instances", out), out
            assert re.search(r"Initial score: \d+\.\d+", out), out
            hspace = await htools("hspace", "-m", url, "--disk-template", "drbd")
            assert hspace.returncode == 0, hspace.stderr
            assert "There are 2 initial instances on the cluster." in hspace.stdout, hspace.stdout

        # With anonymous reads off, htools authenticate through the URL.
        async with rapi(c, users, anonymous_reads=False) as port2:
            denied = await htools("hbal", "-m", f"https://127.0.0.1:{port2}")
            assert denied.returncode != 0
            allowed = await htools("hbal", "-m", f"https://view:viewpw@127.0.0.1:{port2}")
            assert allowed.returncode == 0, allowed.stderr
            assert "Loaded 4 nodes, 2 instances" in allowed.stdout + allowed.stderr


async def _http(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    auth: tuple[str, str] | None = None,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, Any, Any]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with session.request(
        method,
        url,
        headers={
            "Content-Type": content_type,
            **({"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else {}),
        },
        data=json.dumps(body) if body is not None else None,
        ssl=ctx,
    ) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


WRITES: list[tuple[str, str, Any]] = [
    (
        "POST",
        "/2/instances",
        {
            "__version__": 1,
            "mode": "create",
            "name": "x1",
            "disk_template": "drbd",
            "disks": [{"size": 1024}],
            "nics": [],
        },
    ),
    ("DELETE", "/2/instances/vm000", None),
    ("PUT", "/2/instances/vm000/startup", None),
    ("PUT", "/2/instances/vm000/shutdown", None),
    ("POST", "/2/instances/vm000/reboot", None),
    ("PUT", "/2/instances/vm000/migrate", {}),
    ("PUT", "/2/instances/vm000/failover", {}),
    ("POST", "/2/instances/vm000/replace-disks?mode=replace_new_secondary", None),
    ("POST", "/2/instances/vm000/disk/0/grow", {"amount": 1024}),
    ("PUT", "/2/instances/vm000/activate-disks", None),
    ("PUT", "/2/instances/vm000/tags?tag=a", None),
    ("DELETE", "/2/instances/vm000/tags?tag=owner:alice", None),
    ("PUT", "/2/nodes/node1/role", "drained"),
    ("POST", "/2/nodes/node1/evacuate", {}),
    ("POST", "/2/nodes/node1/migrate", {}),
    ("PUT", "/2/tags?tag=x", None),
]


async def test_roles_and_scopes(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(
            [
                InstanceSpec(
                    name=InstanceName(name),
                    memory_mib=512,
                    vcpus=1,
                    disks=(DiskSpec(size_mib=1024),),
                    tags=frozenset({owner}),
                )
                for name, owner in (("vm000", "owner:alice"), ("vm001", "owner:bob"))
            ]
        )
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=90)
        users = RapiUsers.from_text(USERS)
        async with rapi(c, users) as port, aiohttp.ClientSession() as s:
            base = f"https://127.0.0.1:{port}"
            for method, path, body in WRITES:
                status, err, headers = await _http(s, method, base + path, body=body)
                assert status == 401, (method, path, status, err)
                assert headers["WWW-Authenticate"] == 'Basic realm="Ganeti Remote API"'
                assert set(err) == {"code", "message", "explain"} and err["code"] == 401
                status, err, _ = await _http(
                    s, method, base + path, auth=("view", "viewpw"), body=body
                )
                assert status == 403, (method, path, status, err)
            # Operators may operate but not change desired state.
            status, err, _ = await _http(
                s, "POST", base + WRITES[0][1], auth=("ops", "opspw"), body=WRITES[0][2]
            )
            assert status == 403, err
            # A browser driven cross-site sends text/plain (no preflight): refused
            # before anything is looked at, even with an admin's credentials.
            status, err, _ = await _http(
                s,
                "POST",
                base + "/2/instances/vm000/reboot",
                auth=("root", "rootpw"),
                body={},
                content_type="text/plain",
            )
            assert status == 415, err
            # Nothing was recorded for any of these requests.
            state = engine.state
            assert not [j for j in state.jobs.values() if j.actor.startswith("rapi:")]
            assert "x1" not in state.desired.instances
            assert state.desired.instances[InstanceName("vm000")].tags == {"owner:alice"}
            assert not state.desired.nodes[NodeName("node1")].drained

            # Wrong password: 401, counted, never echoed.
            status, err, _ = await _http(s, "GET", base + "/2/info", auth=("root", "nope"))
            assert status == 401 and "nope" not in json.dumps(err)
            assert users.stats.by_reason["bad-password"] == 1

            # The scoped user sees and acts on its own instance only.
            alice = ("alice", "alicepw")
            _, listed, _ = await _http(s, "GET", base + "/2/instances?bulk=1", auth=alice)
            assert [i["name"] for i in listed] == ["vm000"]
            _, everyone, _ = await _http(s, "GET", base + "/2/instances", auth=("view", "viewpw"))
            assert [i["id"] for i in everyone] == ["vm000", "vm001"]
            status, _, _ = await _http(s, "GET", base + "/2/instances/vm001", auth=alice)
            assert status == 404
            status, _, _ = await _http(s, "PUT", base + "/2/instances/vm001/shutdown", auth=alice)
            assert status == 404
            status, _, _ = await _http(
                s, "PUT", base + "/2/nodes/node1/role", auth=alice, body="drained"
            )
            assert status == 403
            _, nodes, _ = await _http(s, "GET", base + "/2/nodes?bulk=1", auth=alice)
            assert sorted(i for n in nodes for i in n["pinst_list"] + n["sinst_list"]) == [
                "vm000",
                "vm000",
            ]
            status, job, _ = await _http(s, "PUT", base + "/2/instances/vm000/shutdown", auth=alice)
            assert status == 200 and isinstance(job, int)
            while True:
                _, st, _ = await _http(s, "GET", f"{base}/2/jobs/{job}", auth=alice)
                if st["status"] in ("success", "error", "canceled"):
                    break
                await asyncio.sleep(0.2)
            assert st["status"] == "success", st
            assert c.running_on("vm000") == [] and len(c.running_on("vm001")) == 1
            _, jobs, _ = await _http(s, "GET", base + "/2/jobs", auth=alice)
            assert [j["id"] for j in jobs] == [job]
