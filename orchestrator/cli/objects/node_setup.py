"""`corral node add` and `corral node check`: bringing a host into the cluster.
Connects once with the operator's SSH credentials (root, or a user with sudo),
shows the host key's SHA256 fingerprint and pins it (or compares it with
`--host-key`), runs the prerequisite checks of `reactors.nodes.checks`, and prints
one line per check with ok or FAILED and the fix. `--install` makes a fresh
Debian host pass what can be fixed without a person, then checks again.

A node add whose checks fail records nothing and pins nothing; one that passes
records NodeChecked and NodeDeclared in one transaction and writes the pinned key
into the orchestrator's known_hosts. `node check` records NodeChecked either way.
The operator's credentials are used for this connection only and never stored.
Their parsers are in `orchestrator.cli.objects.node_parsers`, which stays cheap to import.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import re
import subprocess
import sys
import time
from pathlib import Path

import asyncssh

from events.ids import NodeName, new_event_id
from events.model import NodeChecked, NodeDeclared
from events.specs import FenceSpec, NodeSpec
from events.state import ClusterState
from events.store import EventStore
from events.validation import problems_of
from orchestrator.cli.context import UsageError, actor
from orchestrator.cli.objects.jobs import report_accepted
from orchestrator.operations import Accepted
from reactors.nodes.checks import (
    NodeReport,
    Requirements,
    check_line,
    gather_script,
    install_script,
    judge,
    parse_gathered,
    validate,
)

_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|[0-9a-fA-F:.]+")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


# The model's field paths as `corral node add` flags.
NODE_FLAGS = {
    "address": "--address",
    "port": "--port",
    "memory_mib": "--memory",
    "disk_mib": "--disk",
    "cpus": "--cpus",
    "host_memory_mib": "--host-memory",
    "host_cpus": "--host-cpus",
    "fence": "--fence-agent/--fence-option",
}


# ---------------------------------------------------------------------- the connection


async def _host_key(address: str, port: int) -> asyncssh.SSHKey:
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(address, port), 15)
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise UsageError(f"cannot reach {address}:{port}: {exc}; nothing was recorded") from exc
    if key is None:
        raise UsageError(f"{address}:{port} offered no host key; nothing was recorded")
    return key


def _pinned_key(known_hosts: Path, address: str, port: int) -> asyncssh.SSHKey | None:
    if not known_hosts.exists():
        return None
    host = address if port == 22 else f"[{address}]:{port}"
    for line in known_hosts.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and host in parts[0].split(","):
            return asyncssh.import_public_key(" ".join(parts[1:3]))
    return None


def _pin(known_hosts: Path, address: str, port: int, key: asyncssh.SSHKey) -> None:
    host = address if port == 22 else f"[{address}]:{port}"
    lines = []
    if known_hosts.exists():
        lines = [
            line
            for line in known_hosts.read_text().splitlines()
            if not line.split() or host not in line.split()[0].split(",")
        ]
    lines.append(f"{host} {key.export_public_key().decode().strip()}")
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.write_text("\n".join(lines) + "\n")


async def _connect(
    args: argparse.Namespace, address: str, port: int, key: asyncssh.SSHKey
) -> asyncssh.SSHClientConnection:
    options: dict[str, object] = {"known_hosts": ([key], [], [])}
    if args.ssh_key is not None:
        options["client_keys"] = [str(args.ssh_key)]
    try:
        return await asyncio.wait_for(
            asyncssh.connect(address, port, username=args.ssh_user, **options),  # type: ignore[arg-type]
            20,
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise UsageError(
            f"cannot log in to {address}:{port} as {args.ssh_user}: {exc}; nothing was recorded"
        ) from exc


async def _root_run(
    conn: asyncssh.SSHClientConnection, user: str, script: str, timeout: float
) -> asyncssh.SSHCompletedProcess:
    line = "sh -s" if user == "root" else "sudo -n sh -s"
    return await asyncio.wait_for(conn.run(line, input=script, check=False), timeout)


async def _built_helper() -> str:
    """The node helper as deployed: one file built from the `nodehelper` package
    installed beside corral (in a child process: the product never imports it)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nodehelper.bundle"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise UsageError(f"cannot build the node helper: {done.stderr.strip()[-300:]}")
    return done.stdout


async def _inspect(
    conn: asyncssh.SSHClientConnection, args: argparse.Namespace, req: Requirements
) -> NodeReport:
    t0 = time.time()
    clock = await conn.run("date +%s.%N", check=False)
    t1 = time.time()
    result = await _root_run(conn, args.ssh_user, gather_script(), 120)
    if result.exit_status not in (0, None) and not result.stdout:
        raise UsageError(f"the checks did not run: {str(result.stderr).strip()[:300]}")
    try:
        sections = parse_gathered(str(result.stdout))
    except ValueError as exc:
        raise UsageError(f"{exc}; nothing was recorded") from exc
    sections["time"] = str(clock.stdout)
    return judge(sections, req, local_time=(t0 + t1) / 2, rtt_s=t1 - t0)


def _print_report(report: NodeReport) -> None:
    for check in report.checks:
        print(check_line(check))


def _requirements(args: argparse.Namespace, state: ClusterState, address: str) -> Requirements:
    bridges = sorted(
        {nic.link for spec in state.desired.instances.values() for nic in spec.nics if nic.link}
    )
    corral_key = None
    if args.client_key is not None:
        pub = Path(str(args.client_key) + ".pub")
        try:
            key = (
                asyncssh.import_public_key(pub.read_text())
                if pub.exists()
                else asyncssh.read_private_key(str(args.client_key)).convert_to_public()
            )
        except (OSError, ValueError, asyncssh.KeyImportError) as exc:
            raise UsageError(f"--client-key {args.client_key}: {exc}") from exc
        corral_key = key.export_public_key().decode().strip()
    rep = getattr(args, "replication_address", None)
    req = Requirements(
        volume_group=getattr(args, "volume_group", "corral"),
        memory_mib=getattr(args, "memory", None),
        disk_mib=getattr(args, "disk", None),
        bridges=tuple(bridges),
        replication_address=rep if rep and rep != address else None,
        corral_key=corral_key,
    )
    try:
        validate(req)
    except ValueError as exc:
        raise UsageError(f"{exc}; nothing was recorded") from exc
    return req


def _check_address(address: str, what: str) -> None:
    if not _HOST.fullmatch(address):
        raise UsageError(f"{what}: {address!r} is not a host name or IP address")


# ---------------------------------------------------------------------- node add


async def node_add(
    args: argparse.Namespace, store: EventStore, state: ClusterState, name: NodeName
) -> int:
    if name in state.desired.nodes:
        raise UsageError(
            f"node {name} is already declared; `corral node check {name}` re-checks it"
        )
    _check_address(args.address, "--address")
    if args.replication_address:
        try:
            ipaddress.ip_address(args.replication_address)
        except ValueError as exc:
            raise UsageError(f"--replication-address: {exc}") from exc
    if not 1 <= args.port <= 65535 or (args.cpus is not None and args.cpus < 1):
        raise UsageError("--port must be 1-65535 and --cpus at least 1")
    fence = _fence(args)
    if args.host_key is not None and not _FINGERPRINT.fullmatch(args.host_key):
        raise UsageError(f"--host-key: {args.host_key!r} is not a SHA256:... fingerprint")
    req = _requirements(args, state, args.address)

    key = await _host_key(args.address, args.port)
    fingerprint = key.get_fingerprint("sha256")
    print(f"host key         {key.get_algorithm()} {fingerprint}")
    if args.host_key is not None and args.host_key != fingerprint:
        print(
            f"FAILED host key  {args.address}:{args.port} offered {fingerprint}, "
            f"not {args.host_key}"
        )
        print(
            "                 fix: compare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`"
            " on the node's console; if the node was reinstalled, pass its new fingerprint"
        )
        print(f"node {name} not added")
        return 1
    if args.host_key is None and not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"check the fingerprint {fingerprint} on the node's console, then pass "
                f"--host-key {fingerprint} (or --yes); nothing was recorded"
            )
        answer = await asyncio.to_thread(input, f"pin {fingerprint} for {name}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print(f"node {name} not added")
            return 1

    conn = await _connect(args, args.address, args.port, key)
    installed = False
    try:
        report = await _inspect(conn, args, req)
        _print_report(report)
        if not report.ok and args.install:
            print(f"installing on {name} ...")
            script = install_script(report, req, helper=await _built_helper())
            result = await _root_run(conn, args.ssh_user, script, 900)
            if result.exit_status != 0:
                print(
                    f"FAILED install   exit {result.exit_status}: "
                    f"{str(result.stderr).strip()[-400:]}"
                )
            installed = True
            report = await _inspect(conn, args, req)
            _print_report(report)
    finally:
        conn.close()
    if not report.ok:
        failed = sum(not c.ok for c in report.checks)
        print(
            f"node {name} not added: {failed} check(s) failed"
            + ("" if args.install else " (--install fixes the ones it can)")
        )
        return 1

    spec = NodeSpec(
        name=name,
        address=args.address,
        port=args.port,
        replication_address=args.replication_address,
        memory_mib=args.memory or report.memory_mib,
        disk_mib=args.disk or report.vg_free_mib,
        cpus=args.cpus or report.cpus,
        volume_group=req.volume_group,
        host_memory_mib=args.host_memory,
        host_cpus=args.host_cpus,
        fence=fence,
    )
    found = problems_of(spec)  # the model every entry point holds specs to
    if found:
        raise UsageError(
            "; ".join(f"{NODE_FLAGS.get(str(p.loc[0]), p.path)}: {p.message}" for p in found)
            + "; nothing was recorded"
        )
    now = time.time()
    checked = NodeChecked(
        id=new_event_id(),
        time=now,
        actor=actor(store),
        reason=args.reason,
        node=name,
        address=f"{args.address}:{args.port}",
        ok=True,
        checks=report.checks,
        host_key=key.export_public_key().decode().strip(),
        fingerprint=fingerprint,
        drbd_version=report.drbd_version,
        installed=installed,
    )
    declared = NodeDeclared(
        id=new_event_id(), time=now, actor=actor(store), reason=args.reason, spec=spec
    )
    revision = await store.append([checked, declared], expected={f"node/{name}": 0})
    _pin(args.known_hosts, args.address, args.port, key)
    print(
        f"node {name} added: DRBD {report.drbd_version}, {spec.cpus} CPUs, "
        f"{spec.memory_mib} MiB memory, {spec.disk_mib} MiB disk; host key pinned in "
        f"{args.known_hosts}"
    )
    return await report_accepted(
        args, store, Accepted(revision=revision, event_ids=(checked.id, declared.id))
    )


def _fence(args: argparse.Namespace) -> FenceSpec | None:
    if not args.fence_agent:
        if args.fence_option:
            raise UsageError("--fence-option without --fence-agent")
        return None
    if not re.fullmatch(r"fence_[a-z0-9_]+", args.fence_agent):
        raise UsageError(f"--fence-agent: {args.fence_agent!r} is not a fence_* agent name")
    options = []
    for item in args.fence_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--fence-option: {item!r} is not KEY=VALUE")
        if key.lower() in ("password", "passwd", "secret"):
            raise UsageError(
                "--fence-option: secrets do not go on the command line; they come from "
                "the orchestrator hosts' fencing configuration (/etc/corral/fencing.yaml)"
            )
        options.append((key, value))
    return FenceSpec(agent=args.fence_agent, options=tuple(options))


# ---------------------------------------------------------------------- node check


async def node_check(
    args: argparse.Namespace, store: EventStore, state: ClusterState, name: NodeName
) -> int:
    spec = state.desired.nodes.get(name)
    if spec is None:
        raise UsageError(f"no node named {name!r}")
    key = _pinned_key(args.known_hosts, spec.address, spec.port)
    if key is None:
        raise UsageError(f"{args.known_hosts} pins no key for {spec.address}:{spec.port}")
    offered = await _host_key(spec.address, spec.port)
    fingerprint = offered.get_fingerprint("sha256")
    lines = []
    if fingerprint != key.get_fingerprint("sha256"):
        print(
            f"FAILED host key  {spec.address}:{spec.port} offered {fingerprint}, "
            f"pinned {key.get_fingerprint('sha256')}"
        )
        print(
            "                 fix: if the node was reinstalled, `corral node remove` it and "
            "add it again with its new fingerprint"
        )
        report = None
    else:
        req = Requirements(
            volume_group=spec.volume_group,
            memory_mib=spec.memory_mib,
            bridges=_requirements(args, state, spec.address).bridges,
            replication_address=spec.replication_address
            if spec.replication_address != spec.address
            else None,
            corral_key=_requirements(args, state, spec.address).corral_key,
        )
        conn = await _connect(args, spec.address, spec.port, key)
        try:
            report = await _inspect(conn, args, req)
        finally:
            conn.close()
        _print_report(report)
        lines = list(report.checks)
    from events.model import NodeCheckLine

    if report is None:
        lines = [NodeCheckLine(name="host key", ok=False, detail=f"offered {fingerprint}")]
    ok = report is not None and report.ok
    event = NodeChecked(
        id=new_event_id(),
        time=time.time(),
        actor=actor(store),
        reason=args.reason,
        node=name,
        address=f"{spec.address}:{spec.port}",
        ok=ok,
        checks=tuple(lines),
        host_key=offered.export_public_key().decode().strip(),
        fingerprint=fingerprint,
        drbd_version=report.drbd_version if report else "",
    )
    await store.append([event])
    failed = sum(not c.ok for c in lines)
    print(f"node {name}: {'all checks passed' if ok else f'{failed} check(s) failed'} (recorded)")
    return 0 if ok else 1
