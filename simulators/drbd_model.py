"""A model of DRBD two-node resources (8.4 and 9) as a simulated host sees them: resource
files parsed from /etc/drbd.d, metadata, roles, disk states, and the data lineage
(generation identifiers) that decides sync direction and split brain when two
copies connect.

Pure state and rules, no I/O: the fabric (`simulators.fabric`) decides which peers
can talk and advances resyncs; the node shell (`simulators.tools`) maps drbdadm and
drbdsetup argv onto these methods. Imports nothing from corral's own packages.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

_uuid = itertools.count(0x1000)


def new_uuid() -> int:
    return next(_uuid)


class DrbdError(Exception):
    def __init__(self, message: str, rc: int = 10) -> None:
        super().__init__(message)
        self.rc = rc


@dataclass
class HostSection:
    name: str
    node_id: int
    address: str
    port: int
    minor: int
    disk: str


@dataclass
class ResourceConfig:
    name: str
    hosts: dict[str, HostSection]
    allow_two_primaries: bool = False


_TOKEN = re.compile(r'"[^"]*"|[{};]|[^\s{};]+')


def parse_resource_file(text: str, *, major: int = 9, path: str = "") -> ResourceConfig:
    """Parse the subset of drbd.conf syntax corral writes (and drbdadm accepts).
    DRBD 9 takes `node-id` in an `on` section and numbers hosts in file order
    without it; 8.4's drbdadm refuses the keyword, with the real error text."""
    tokens = [t.strip('"') for t in _TOKEN.findall(re.sub(r"#[^\n]*", "", text))]
    pos = 0

    def expect(value: str) -> None:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] != value:
            got = tokens[pos] if pos < len(tokens) else "end of file"
            raise DrbdError(f"parse error: expected '{value}', got '{got}'", rc=10)
        pos += 1

    expect("resource")
    name = tokens[pos]
    pos += 1
    expect("{")
    hosts: dict[str, HostSection] = {}
    two = False
    depth = 1
    while pos < len(tokens) and depth > 0:
        tok = tokens[pos]
        if tok == "on":
            host = tokens[pos + 1]
            pos += 2
            expect("{")
            values: dict[str, list[str]] = {}
            while tokens[pos] != "}":
                key = tokens[pos]
                if key == "node-id" and major < 9:
                    line = text[: text.find("node-id")].count("\n") + 1
                    raise DrbdError(
                        f"{path}:{line}: Parse error: 'disk | device | address | meta-disk | "
                        "flexible-meta-disk' expected,\n\tbut got 'node-id'",
                        rc=10,
                    )
                args = []
                pos += 1
                while tokens[pos] != ";":
                    args.append(tokens[pos])
                    pos += 1
                pos += 1
                values[key] = args
            pos += 1
            try:
                addr = values["address"][-1]
                ip, _, port = addr.rpartition(":")
                minor = int(values["device"][values["device"].index("minor") + 1])
                hosts[host] = HostSection(
                    name=host,
                    node_id=int(values["node-id"][0]) if "node-id" in values else len(hosts),
                    address=ip,
                    port=int(port),
                    minor=minor,
                    disk=values["disk"][0],
                )
            except (KeyError, ValueError, IndexError) as exc:
                raise DrbdError(f"parse error in 'on {host}': {exc}", rc=10) from exc
        elif tok == "allow-two-primaries":
            two = tokens[pos + 1] == "yes"
            pos += 2
        elif tok == "{":
            depth += 1
            pos += 1
        elif tok == "}":
            depth -= 1
            pos += 1
        else:
            pos += 1
    if len(hosts) != 2:
        raise DrbdError(f"resource {name}: expected two 'on' sections, got {len(hosts)}")
    return ResourceConfig(name=name, hosts=hosts, allow_two_primaries=two)


@dataclass
class Copy:
    """One node's side of a resource: metadata lives on the LV, role in the kernel."""

    name: str
    config: ResourceConfig
    has_md: bool = True
    up: bool = False
    role: str = "Secondary"
    disk: str = "Inconsistent"  # UpToDate, Inconsistent, Outdated, Diskless, Failed
    current: int = 0  # generation identifier of the data; 0 = never written
    history: list[int] = field(default_factory=list)
    wrote_disconnected: bool = False
    standalone: bool = False  # after disconnect or split brain: no reconnect attempts
    discard_my_data: bool = False
    sync_done_mib: float = 0.0  # as SyncTarget
    size_mib: int = 0

    def knows(self, gen: int) -> bool:
        return gen == self.current or gen in self.history


@dataclass
class LinkState:
    connection: str  # Connected, Connecting, StandAlone
    replication: str  # Established, SyncSource, SyncTarget, Off
    peer_role: str
    peer_disk: str
    percent: float


def resolve_connect(a: Copy, b: Copy) -> str:
    """What happens when two copies meet: 'same', 'a->b' (a is SyncSource),
    'b->a', or 'split-brain'."""
    if a.discard_my_data and not b.discard_my_data:
        return "b->a"
    if b.discard_my_data and not a.discard_my_data:
        return "a->b"
    if a.current == b.current:
        if a.disk == "UpToDate" and b.disk != "UpToDate":
            return "a->b"
        if b.disk == "UpToDate" and a.disk != "UpToDate":
            return "b->a"
        return "same"
    if a.current == 0:
        return "b->a"
    if b.current == 0:
        return "a->b"
    if a.knows(b.current) and not b.knows(a.current):
        return "a->b"
    if b.knows(a.current) and not a.knows(b.current):
        return "b->a"
    return "split-brain"
