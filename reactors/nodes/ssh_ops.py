"""Acting on nodes over SSH: one long-lived asyncssh connection per node (pinned
host keys from a known_hosts file, never accepting unknown keys; key auth;
keepalive; reconnect on the next use after a failure) carrying up to
`per_node_limit` concurrent sessions (channels), per-command timeouts; running
the node helper's requests of `reactors.nodes.commands` under the leader's term
(the steps bound for one node in one turn of the loop as one `batch`, through
`reactors.nodes.pass_batches`), QMP through SSH unix-socket forwarding, and
fence agents.

Decides nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import asyncssh
import structlog

from events.ids import NodeName
from events.specs import FenceSpec, NodeSpec
from reactors.naming import run_dir
from reactors.nodes.commands import (
    EXIT_REFUSED,
    EXIT_STALE_TERM,
    BatchResult,
    CommandLine,
    HelperRequest,
    batch_line,
    drbdadm,
    helper_line,
    lv_extend,
    parse_batch,
    q,
    step_requests,
    vm_kill,
)
from reactors.nodes.drbd_status import drbd_major, parse_drbd_version
from reactors.nodes.fence_config import FencingConfig
from reactors.nodes.fencing import run_fence_agent
from reactors.nodes.pass_batches import PassBatcher
from reactors.nodes.probe import DrbdVersionChanged, parse_probe, probe_line
from reactors.nodes.qmp import QmpError, qmp_session
from reactors.nodes.ssh_logging import check_level_first
from reactors.plans.steps import Step, StepKind
from reactors.seams import NodeSnapshot, NodeUnreachable, StepOutcome

# AES-GCM first (OpenSSH offers it by default): asyncssh's ChaCha20-Poly1305, its
# own first choice, costs six times the CPU per packet (16 against 2.7 us for a
# small packet here), and every probe and step of every node goes through it.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)

log = structlog.get_logger("corral.nodes")

check_level_first()


@dataclass
class CommandResult:
    rc: int
    stdout: str
    stderr: str
    duration_s: float


@dataclass
class SshNodeOps:
    known_hosts: Path
    client_key: Path
    # Concurrent sessions on a node's one connection: below OpenSSH's MaxSessions
    # (10 by default), which counts each command's session channel.
    per_node_limit: int = 8
    command_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    migrate_timeout_s: float = 300.0
    nodes: dict[NodeName, NodeSpec] = field(default_factory=dict)
    # Which fence agents this host may run (default: none; `corral serve` loads
    # /etc/corral/fencing.yaml).
    fencing: FencingConfig = field(default_factory=FencingConfig)
    _conns: dict[NodeName, asyncssh.SSHClientConnection] = field(default_factory=dict)
    _connecting: dict[NodeName, asyncio.Lock] = field(default_factory=dict)
    _limits: dict[NodeName, asyncio.Semaphore] = field(default_factory=dict)
    # Each node's DRBD module (8 or 9), from its probes: resource files differ.
    drbd_majors: dict[NodeName, int] = field(default_factory=dict)
    commands_run: int = 0
    command_errors: int = 0
    # The pinned host keys and the client key, parsed once per version of their
    # files (asyncssh given paths parses both at every connect: 200 host keys
    # per connection was a third of the orchestrator's time reconnecting 200
    # nodes). A file changed (a node added) is read again at the next connect.
    _parsed: dict[str, tuple[tuple[int, int], Any]] = field(default_factory=dict)
    # The leader's term (`set_term`): every command that changes a node carries
    # it, and the node's helper refuses a term older than the newest it has seen
    # (safety rule 8). None: nothing that changes a node is sent.
    term: int | None = None
    # Called after every command with (node, the command's first word, seconds,
    # answered): the service feeds /metrics with it; a command that ran and exited
    # non-zero was answered, a timeout or a broken connection was not. Never given
    # the command's text.
    on_command: Callable[[str, str, float, bool], None] | None = None
    # Steps of one node in one batch at most (one round trip per node per pass).
    max_steps_per_batch: int = 64
    batcher: PassBatcher = field(init=False)
    # The declared nodes `update_nodes` last took in (the fold's map, never mutated).
    _specs_seen: Mapping[NodeName, NodeSpec] | None = None

    def __post_init__(self) -> None:
        self.batcher = PassBatcher(
            send_batch=self.batch,
            send_one=self._one,
            split_on=lambda exc: isinstance(exc, HelperRefused) and exc.rc == EXIT_REFUSED,
            max_steps=self.max_steps_per_batch,
        )

    def _observe(self, node: NodeName, command: CommandLine, started: float, ok: bool) -> None:
        if self.on_command is not None:
            word = command.label or (command.line.split(maxsplit=1) or ["?"])[0]
            self.on_command(node, word.rsplit("/", 1)[-1], time.monotonic() - started, ok)

    def set_term(self, term: int) -> None:
        self.term = term

    def update_nodes(self, specs: Mapping[NodeName, NodeSpec]) -> None:
        # Called after every event: the fold hands over the same map until a
        # node's spec changes.
        if specs is self._specs_seen:
            return
        self._specs_seen = specs
        for name, spec in specs.items():
            old = self.nodes.get(name)
            if old is not None and (old.address, old.port) != (spec.address, spec.port):
                conn = self._conns.pop(name, None)
                if conn is not None:
                    conn.abort()
            self.nodes[name] = spec

    # ------------------------------------------------------------------ transport

    def _parsed_file(self, path: Path, parse: Callable[[str], Any]) -> Any:
        st = path.stat()
        version = (st.st_mtime_ns, st.st_size)
        hit = self._parsed.get(str(path))
        if hit is not None and hit[0] == version:
            return hit[1]
        value = parse(str(path))
        self._parsed[str(path)] = (version, value)
        return value

    def _known_hosts(self) -> asyncssh.SSHKnownHosts:
        return cast(
            asyncssh.SSHKnownHosts, self._parsed_file(self.known_hosts, asyncssh.read_known_hosts)
        )

    def _client_keys(self) -> list[asyncssh.SSHKeyPair]:
        return cast(
            list[asyncssh.SSHKeyPair], self._parsed_file(self.client_key, asyncssh.load_keypairs)
        )

    async def _connection(self, node: NodeName) -> asyncssh.SSHClientConnection:
        conn = self._conns.get(node)
        if conn is not None and not conn.is_closed():
            return conn
        lock = self._connecting.setdefault(node, asyncio.Lock())
        async with lock:
            conn = self._conns.get(node)
            if conn is not None and not conn.is_closed():
                return conn
            spec = self.nodes.get(node)
            if spec is None:
                raise NodeUnreachable(f"{node} is not a declared node")
            try:
                conn = await asyncio.wait_for(
                    asyncssh.connect(
                        spec.address,
                        spec.port,
                        username=spec.ssh_user,
                        client_keys=self._client_keys(),
                        known_hosts=self._known_hosts(),
                        keepalive_interval=2,
                        keepalive_count_max=self.keepalive_count_max,
                        agent_path=None,
                        encryption_algs=CIPHERS,
                    ),
                    self.connect_timeout_s,
                )
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                raise NodeUnreachable(
                    f"{node} ({spec.address}:{spec.port}): {type(exc).__name__}: {exc}"
                ) from exc
            self._conns[node] = conn
            return conn

    @property
    def keepalive_count_max(self) -> int:
        """Keep-alives every 2 s left unanswered this many times drop the
        connection: silent for about the connect timeout (slow, emulated nodes
        get a longer one)."""
        return max(2, round(self.connect_timeout_s / 2))

    async def run(
        self, node: NodeName, command: CommandLine, *, timeout_s: float | None = None
    ) -> CommandResult:
        limit = self._limits.setdefault(node, asyncio.Semaphore(self.per_node_limit))
        timeout = timeout_s or self.command_timeout_s
        async with limit:
            conn = await self._connection(node)
            started = time.monotonic()
            try:
                result = await asyncio.wait_for(
                    conn.run(command.line, input=command.stdin.decode(), check=False), timeout
                )
            except TimeoutError as exc:
                self.command_errors += 1
                self._observe(node, command, started, False)
                raise NodeUnreachable(
                    f"{node}: '{command.summary}' timed out after {timeout:.0f}s"
                ) from exc
            except (OSError, asyncssh.Error) as exc:
                self._conns.pop(node, None)
                self.command_errors += 1
                self._observe(node, command, started, False)
                raise NodeUnreachable(f"{node}: {type(exc).__name__}: {exc}") from exc
            self.commands_run += 1
            rc = result.exit_status if result.exit_status is not None else 255
            self._observe(node, command, started, True)  # answered: not a transport error
            return CommandResult(
                rc=rc,
                stdout=str(result.stdout or ""),
                stderr=str(result.stderr or ""),
                duration_s=time.monotonic() - started,
            )

    async def close(self) -> None:
        await self.batcher.close()
        for conn in self._conns.values():
            conn.close()
        for conn in list(self._conns.values()):
            try:
                await asyncio.wait_for(conn.wait_closed(), 2)
            except (TimeoutError, OSError, asyncssh.Error):
                pass
        self._conns.clear()

    # ------------------------------------------------------------------ the helper

    async def helper(self, node: NodeName, request: HelperRequest) -> CommandResult:
        """One helper verb on `node`, under the current term if it changes the node."""
        timeout = self.command_timeout_s + request.extra_timeout_s
        return await self.run(node, helper_line(request, term=self.term), timeout_s=timeout)

    async def batch(
        self, node: NodeName, groups: Sequence[tuple[str, Sequence[HelperRequest]]]
    ) -> list[list[BatchResult]]:
        """Several groups of helper requests in one round trip under the current
        term, the results per group in order; within a group, the requests after a
        failure come back skipped (rc None). A batch the node refused as a whole
        (a stale term, an invalid request) raises HelperRefused."""
        line = batch_line(groups, term=self.term)
        count = sum(len(requests) for _, requests in groups)
        # The helper runs the requests one after another: the longest group's
        # allowance each, and a little for every other request.
        longest = max((len(requests) for _, requests in groups), default=1)
        timeout = self.command_timeout_s * max(1, longest) + 2.0 * count
        timeout += sum(r.extra_timeout_s for _, requests in groups for r in requests)
        result = await self.run(node, line, timeout_s=timeout)
        if result.rc != 0:
            raise HelperRefused(node, result)
        flat = iter(parse_batch(result.stdout, count=count))
        return [[next(flat) for _ in requests] for _, requests in groups]

    # ------------------------------------------------------------------ NodeOps

    async def probe(self, node: NodeName) -> NodeSnapshot:
        spec = self.nodes.get(node)
        vg = spec.volume_group if spec else "corral"
        major = await self._drbd_major(node)
        result = await self.run(node, probe_line(drbd_major=major))
        try:
            return parse_probe(result.stdout, volume_group=vg, drbd_major=major)
        except DrbdVersionChanged as changed:
            major = self.drbd_majors[node] = changed.major
        result = await self.run(node, probe_line(drbd_major=major))
        return parse_probe(result.stdout, volume_group=vg, drbd_major=major)

    async def _drbd_major(self, node: NodeName) -> int:
        """The node's DRBD major version: from its last probe, else asked (the loaded
        module's /proc/drbd, else the module file's version); 9 if neither says."""
        if node in self.drbd_majors:
            return self.drbd_majors[node]
        result = await self.run(
            node,
            CommandLine(
                line=q("head", "-n", "1", "/proc/drbd")
                + " || "
                + q("/sbin/modinfo", "-F", "version", "drbd"),
                summary="drbd version",
            ),
        )
        text = result.stdout.strip()
        major = drbd_major(parse_drbd_version(text) or text)
        if major:
            self.drbd_majors[node] = major
        return major or 9

    async def execute(self, step: Step) -> StepOutcome:
        started = time.monotonic()
        try:
            if step.kind == StepKind.STOP_VM:
                summary = await self._stop_vm(step.node, step.instance)
            elif step.kind == StepKind.MIGRATE_VM:
                summary = await self._migrate(step)
            elif step.kind == StepKind.GROW_DISK:
                summary = await self._grow(step)
            else:
                requests = step_requests(step, drbd_major=await self._drbd_major(step.node))
                summary = await self._run_requests(step.node, requests, step)
        except _StepFailed as exc:
            return StepOutcome(
                ok=False,
                command=exc.summary,
                duration_s=time.monotonic() - started,
                error=str(exc),
            )
        except HelperRefused as exc:
            return StepOutcome(
                ok=False,
                command=step.summary,
                duration_s=time.monotonic() - started,
                error=str(exc)[:500],
            )
        except (NodeUnreachable, OSError, asyncssh.Error, ValueError) as exc:
            return StepOutcome(
                ok=False,
                command=step.summary,
                duration_s=time.monotonic() - started,
                error=f"{type(exc).__name__}: {exc}"[:500],
            )
        return StepOutcome(ok=True, command=summary, duration_s=time.monotonic() - started)

    async def _one(self, node: NodeName, request: HelperRequest) -> BatchResult:
        result = await self.helper(node, request)
        return BatchResult(rc=result.rc, stdout=result.stdout, stderr=result.stderr)

    async def _send(self, node: NodeName, requests: list[HelperRequest]) -> list[BatchResult]:
        """A step's requests in order, in the node's batch of this loop turn (one
        round trip for every step bound there at once)."""
        return await self.batcher.submit(node, requests)

    async def _run_requests(self, node: NodeName, requests: list[HelperRequest], step: Step) -> str:
        done: list[str] = []
        pending = list(requests)
        metadata_written = False
        while pending:
            results = await self._send(node, pending)
            for i, (request, result) in enumerate(zip(pending, results, strict=True)):
                if result.rc == 0 or (
                    result.rc is not None
                    and request.ok_if_stderr
                    and re.search(request.ok_if_stderr, result.stderr)
                ):
                    done.append(request.summary)
                    continue
                if "No valid meta data" in result.stderr and step.disk and not metadata_written:
                    # An LV whose metadata was never written (a crash between lvcreate
                    # and create-md): it never held data, so creating it is safe.
                    await self._check(node, drbdadm("create-md", step.disk.resource, "--force"))
                    metadata_written = True
                    pending = pending[i:]
                    break
                raise _StepFailed(
                    _failure(request, result), summary="; ".join([*done, request.summary])
                )
            else:
                pending = []
        return "; ".join(done)

    async def _check(self, node: NodeName, request: HelperRequest) -> CommandResult:
        result = await self.helper(node, request)
        if result.rc != 0:
            raise _StepFailed(
                _failure(request, BatchResult(rc=result.rc, stdout="", stderr=result.stderr)),
                summary=request.summary,
            )
        return result

    async def _grow(self, step: Step) -> str:
        assert step.disk is not None
        if step.grow_peer is not None:
            await self._run_requests(step.grow_peer, [lv_extend(step.disk)], step)
        await self._run_requests(
            step.node, [lv_extend(step.disk), drbdadm("resize", step.disk.resource)], step
        )
        return f"grew {step.disk.resource} to {step.disk.size_mib}M on both nodes"

    # ------------------------------------------------------------------ QMP

    async def qmp(
        self, node: NodeName, instance: str, command: str, arguments: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        conn = await self._connection(node)
        path = f"{run_dir()}/{instance}.qmp"
        reader, writer = await conn.open_unix_connection(path)
        try:
            replies = await qmp_session(reader, writer, [(command, arguments)])
        except QmpError as exc:
            raise _StepFailed(str(exc), summary=f"qmp {command}") from exc
        finally:
            writer.close()
        return replies[0] if replies else {"return": {}}

    async def _stop_vm(self, node: NodeName, instance: str) -> str:
        try:
            await self.qmp(node, instance, "quit")
            return f"qmp quit {instance}"
        except (_StepFailed, asyncssh.Error, OSError, TimeoutError, ValueError):
            pass
        # qemu did not answer: the helper kills the process its pidfile names, if
        # that is still this VM's qemu.
        result = await self._check(node, vm_kill(instance))
        return result.stdout.strip() or f"kill -9 {instance}"

    async def _migrate(self, step: Step) -> str:
        uri = f"tcp:{step.migrate_address}:{int(step.migrate_port)}"
        await self.qmp(step.node, step.instance, "migrate", {"uri": uri})
        deadline = time.monotonic() + self.migrate_timeout_s
        while time.monotonic() < deadline:
            reply = await self.qmp(step.node, step.instance, "query-migrate")
            status = reply.get("return", {}).get("status")
            if status == "completed":
                return f"qmp migrate {step.instance} to {uri}: completed"
            if status in ("failed", "cancelled"):
                raise _StepFailed(
                    f"migration {status}: {reply['return'].get('error-desc', '')}",
                    summary=f"qmp migrate {uri}",
                )
            await asyncio.sleep(0.2)
        raise _StepFailed("migration did not complete in time", summary=f"qmp migrate {uri}")

    # ------------------------------------------------------------------ fencing

    async def fence(self, node: NodeName, spec: FenceSpec, action: str) -> tuple[int, str]:
        return await run_fence_agent(spec, action, config=self.fencing, node=node)


class HelperRefused(Exception):
    """The node's helper refused a whole request: an older term than the node has
    seen (exit 75), an invalid request (64), its term lock busy (69)."""

    def __init__(self, node: NodeName, result: CommandResult) -> None:
        reason = "stale term" if result.rc == EXIT_STALE_TERM else f"exit {result.rc}"
        super().__init__(f"{node} refused ({reason}): {result.stderr.strip()[:300]}")
        self.rc = result.rc


def _failure(request: HelperRequest, result: BatchResult) -> str:
    if result.rc == EXIT_STALE_TERM:
        return f"{request.summary}: the node refused a stale term: {result.stderr.strip()[:300]}"
    return f"{request.summary} exited {result.rc}: {result.stderr.strip()[:300]}"


class _StepFailed(Exception):
    def __init__(self, message: str, *, summary: str) -> None:
        super().__init__(message)
        self.summary = summary
