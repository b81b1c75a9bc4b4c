"""corral's etcd roles and how they are put into an etcd: what the orchestrator,
an operator's CLI and a read-only identity may touch under `/corral/<cluster>/`,
granted with etcd's own role-based access control, so etcd itself refuses what a
role does not allow. Users authenticate with client certificates (the CN is the
user name; no passwords, so no token that could expire under a long-running
orchestrator).

- `corral-orchestrator`: read and write the whole cluster prefix (events,
  versions, snapshots, seals, the leader key and whatever the reactors keep).
- `corral-operator` (the CLI of a person): read everything; write only
  `events/`, `versions/` and the order index (`order...`: appending operator
  events with their object versions and their place in the log). It cannot
  write seals, snapshots or the leader key.
- `corral-reader`: read only (status, events, audit verify).

`provision` applies them (idempotently) through etcd's Auth API with the root
identity and turns authentication on; docs/security.md shows the same with
etcdctl. Must not hold credentials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aetcd import rpc


class Role(StrEnum):
    ORCHESTRATOR = "corral-orchestrator"
    OPERATOR = "corral-operator"
    READER = "corral-reader"


class Perm(StrEnum):
    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    prefix: bytes
    perm: Perm


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def cluster_prefix(cluster: str) -> bytes:
    return f"/corral/{cluster}/".encode()


def grants(role: Role, *, clusters: Sequence[str]) -> tuple[Grant, ...]:
    """The permissions of `role` on each of `clusters`. Per cluster, because the
    operator's write grants are sub-prefixes (`events/`, `versions/`) of one
    cluster's prefix, which etcd's key ranges cannot express for all clusters."""
    out: list[Grant] = []
    for cluster in clusters:
        root = cluster_prefix(cluster)
        if role is Role.ORCHESTRATOR:
            out.append(Grant(prefix=root, perm=Perm.READWRITE))
        elif role is Role.OPERATOR:
            out.append(Grant(prefix=root, perm=Perm.READ))
            out.append(Grant(prefix=root + b"events/", perm=Perm.READWRITE))
            out.append(Grant(prefix=root + b"versions/", perm=Perm.READWRITE))
            # The order index each append writes with its events
            # (`order/`, `order-next`, `order-legacy`; events.etcdlog.log_order).
            out.append(Grant(prefix=root + b"order", perm=Perm.READWRITE))
        else:
            out.append(Grant(prefix=root, perm=Perm.READ))
    return tuple(out)


_PERM_TYPE = {Perm.READ: 0, Perm.WRITE: 1, Perm.READWRITE: 2}


def _already(exc: BaseException) -> bool:
    details = exc.details() if isinstance(exc, rpc.AioRpcError) else str(exc)
    return "already exists" in (details or "") or "already granted" in (details or "")


async def _quietly(call: Any) -> None:
    """Run an Auth API call that may have been made before (a re-run)."""
    try:
        await call
    except rpc.AioRpcError as exc:
        if not _already(exc):
            raise


async def provision(
    client: Any,
    *,
    users: Mapping[str, Role],
    clusters: Sequence[str],
    enable: bool = True,
) -> None:
    """Create corral's roles (for `clusters`), the `root` user, the given users
    (certificate users: no password) with their roles, then enable auth. `client`
    is a connected aetcd client of an identity allowed to change auth (before
    auth is on: anyone; after: root). Safe to run again."""
    stub = rpc.AuthStub(client.channel)
    meta = client.metadata
    for role in Role:
        await _quietly(stub.RoleAdd(rpc.AuthRoleAddRequest(name=role.value), metadata=meta))
        for grant in grants(role, clusters=clusters):
            perm = rpc.Permission(
                permType=_PERM_TYPE[grant.perm],
                key=grant.prefix,
                range_end=prefix_end(grant.prefix),
            )
            await _quietly(
                stub.RoleGrantPermission(
                    rpc.AuthRoleGrantPermissionRequest(name=role.value, perm=perm), metadata=meta
                )
            )
    for name, role_name in [("root", "root"), *((u, r.value) for u, r in users.items())]:
        await _quietly(
            stub.UserAdd(
                rpc.AuthUserAddRequest(name=name, options=rpc.UserAddOptions(no_password=True)),
                metadata=meta,
            )
        )
        await _quietly(
            stub.UserGrantRole(
                rpc.AuthUserGrantRoleRequest(user=name, role=role_name), metadata=meta
            )
        )
    if enable:
        await _quietly(stub.AuthEnable(rpc.AuthEnableRequest(), metadata=meta))
