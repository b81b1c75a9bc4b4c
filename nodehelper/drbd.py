"""DRBD on the node: the resource file the helper writes itself from a validated
request (never from text the caller sends: a resource file's `handlers` run
commands as root), and the allow-list of drbdadm sub-commands and options.

Standard library only; builds text and argv, runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodehelper.fields import (
    MINOR_MAX,
    NODE_ID_MAX,
    Refused,
    check_address,
    check_disk,
    check_flag,
    check_name,
    check_number,
    check_object,
    check_vg,
)

DRBD_CONFIG_DIR = "/etc/drbd.d"
DRBD_PORT_MIN, DRBD_PORT_MAX = 1024, 65535

# Sub-command -> the options it may carry. Nothing else reaches drbdadm.
DRBDADM_ALLOWED: dict[str, frozenset[str]] = {
    "create-md": frozenset({"--force"}),
    "up": frozenset(),
    "down": frozenset(),
    "adjust": frozenset(),
    "primary": frozenset({"--force"}),
    "secondary": frozenset(),
    "connect": frozenset({"--discard-my-data"}),
    "disconnect": frozenset(),
    "outdate": frozenset(),
    "resize": frozenset(),
}

# How fast a peer notices a dead node, on both 8.4 and 9 (docs/real-nodes.md): a
# keep-alive every 2 s answered within 1 s, so a silent peer is dropped 2-3 s after
# its last word instead of DRBD's default 10-11 s; `timeout` (tenths) must stay
# below ping-int and connect-int. A false drop costs a short bitmap resync, never
# a failover: corral acts only when the orchestrator lost the node too (rule 7).
NET_TIMING = (("ping-int", "2"), ("ping-timeout", "10"), ("timeout", "15"), ("connect-int", "3"))

_RESOURCE_KEYS = frozenset(
    {"resource", "minor", "port", "volume_group", "allow_two_primaries", "hosts"}
)
_RESOURCE_OPTIONAL = frozenset({"drbd_major"})
_HOST_KEYS = frozenset({"node", "node_id", "address"})


@dataclass(frozen=True, slots=True)
class DrbdHost:
    node: str
    node_id: int
    address: str


@dataclass(frozen=True, slots=True)
class DrbdResource:
    resource: str
    minor: int
    port: int
    volume_group: str
    allow_two_primaries: bool
    hosts: tuple[DrbdHost, ...]
    drbd_major: int = 9

    @property
    def path(self) -> str:
        return f"{DRBD_CONFIG_DIR}/{self.resource}.res"


def resource_request(doc: object) -> DrbdResource:
    """A `drbd-config` request: a two-node resource, every field checked."""
    req = check_object(
        doc, what="drbd-config", required=_RESOURCE_KEYS, optional=_RESOURCE_OPTIONAL
    )
    hosts_doc = req["hosts"]
    if not isinstance(hosts_doc, list) or len(hosts_doc) != 2:
        raise Refused("drbd-config: hosts must be a list of exactly two nodes")
    hosts = tuple(_host(h, i) for i, h in enumerate(hosts_doc))
    if hosts[0].node == hosts[1].node or hosts[0].node_id == hosts[1].node_id:
        raise Refused("drbd-config: the two hosts need different names and node ids")
    return DrbdResource(
        resource=check_disk(req["resource"], what="resource"),
        minor=check_number(req["minor"], what="minor", low=0, high=MINOR_MAX),
        port=check_number(req["port"], what="port", low=DRBD_PORT_MIN, high=DRBD_PORT_MAX),
        volume_group=check_vg(req["volume_group"]),
        allow_two_primaries=check_flag(req["allow_two_primaries"], what="allow_two_primaries"),
        hosts=hosts,
        drbd_major=check_number(req.get("drbd_major", 9), what="drbd_major", low=8, high=9),
    )


def _host(doc: Any, i: int) -> DrbdHost:
    where = f"hosts[{i}]"
    host = check_object(doc, what=where, required=_HOST_KEYS)
    return DrbdHost(
        node=check_name(host["node"], what=f"{where}.node"),
        node_id=check_number(host["node_id"], what=f"{where}.node_id", low=0, high=NODE_ID_MAX),
        address=check_address(host["address"], what=f"{where}.address"),
    )


def resource_text(res: DrbdResource) -> str:
    """A two-node resource for the node's DRBD module: DRBD 9 gets each host's
    node-id; 8.4's drbdadm refuses the keyword, and without it the file is valid
    for both. Split-brain policies never discard data on their own except where
    nothing was written (safety rule 3)."""
    lines = [
        f"resource {res.resource} {{",
        "  net {",
        "    protocol C;",
        f"    allow-two-primaries {'yes' if res.allow_two_primaries else 'no'};",
        "    after-sb-0pri discard-zero-changes;",
        "    after-sb-1pri disconnect;",
        "    after-sb-2pri disconnect;",
        *(f"    {key} {value};" for key, value in NET_TIMING),
        "  }",
    ]
    for host in res.hosts:
        address = f"[{host.address}]" if ":" in host.address else host.address
        lines += [
            f"  on {host.node} {{",
            *([f"    node-id {host.node_id};"] if res.drbd_major >= 9 else []),
            f"    address {address}:{res.port};",
            f"    device /dev/drbd{res.minor} minor {res.minor};",
            f"    disk /dev/{res.volume_group}/{res.resource};",
            "    meta-disk internal;",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def drbdadm_argv(sub: str, options: list[str], resource: str) -> list[str]:
    """`drbdadm SUB [OPTION] RESOURCE` for an allowed sub-command and options."""
    allowed = DRBDADM_ALLOWED.get(sub)
    if allowed is None:
        raise Refused(f"drbdadm: sub-command {sub!r} is not allowed")
    for option in options:
        if option not in allowed:
            raise Refused(f"drbdadm {sub}: option {option!r} is not allowed")
    if len(set(options)) != len(options):
        raise Refused(f"drbdadm {sub}: an option is repeated")
    return ["drbdadm", sub, *options, check_disk(resource, what="resource")]
