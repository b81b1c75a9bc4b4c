"""Who may do what through the HTTP APIs (native and RAPI): three roles and an
optional tag scope, checked the same way by every endpoint.

Pure: no I/O, no logging.

- viewer: read everything it can see;
- operator: viewer + power (start, stop, reboot), console, migrate, failover,
  replace-disks, grow-disk, activate-disks, node drain/evacuate, job cancel;
- admin: everything, including desired state (apply, create/remove instances and
  nodes, policy) and confirm-off.
A principal with `scope_tags` sees and acts only on instances carrying at least one
of those tags (e.g. `owner:alice`), and on no node-level mutation at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Action(StrEnum):
    READ = "read"
    OPERATE = "operate"  # power, console, migrate, failover, disks, cancel
    NODE_OPERATE = "node-operate"  # drain, undrain, evacuate, node migrate/failover
    ADMIN = "admin"  # desired state, create/remove, confirm-off, node add/remove


_ALLOWED: dict[Role, frozenset[Action]] = {
    Role.VIEWER: frozenset({Action.READ}),
    Role.OPERATOR: frozenset({Action.READ, Action.OPERATE, Action.NODE_OPERATE}),
    Role.ADMIN: frozenset(Action),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    name: str  # recorded as the actor: "api:alice", "rapi:bob"
    role: Role
    scope_tags: frozenset[str] = frozenset()

    @property
    def scoped(self) -> bool:
        return bool(self.scope_tags)


def sees_instance(principal: Principal, *, tags: Iterable[str]) -> bool:
    return not principal.scoped or bool(principal.scope_tags & set(tags))


def may(
    principal: Principal, action: Action, *, instance_tags: Iterable[str] | None = None
) -> bool:
    """May `principal` do `action`, on an instance with `instance_tags` when given?
    Scoped principals may read and operate their own instances only, never nodes
    or desired state."""
    if action not in _ALLOWED[principal.role]:
        return False
    if not principal.scoped:
        return True
    if action in (Action.NODE_OPERATE, Action.ADMIN):
        return False
    if instance_tags is None:
        return action is Action.READ
    return sees_instance(principal, tags=instance_tags)
