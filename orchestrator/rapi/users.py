"""RAPI users: Ganeti's users file (`/var/lib/ganeti/rapi/users` format) read into
corral principals, and HTTP Basic authentication against it.

File format, one user per line (blank lines and `#` comments ignored):

    user password [option,option,...]

- password: `{CLEARTEXT}secret`, `{HA1}<md5 hex of "user:Ganeti Remote API:secret">`
  or a bare `secret` (cleartext), prefixes case-insensitive, as in Ganeti;
- options (comma-separated, Ganeti's): none or `read` -> corral viewer, `write` ->
  operator; corral's extensions: `admin` -> admin (create/remove instances, tags),
  `scope=TAG` (repeatable, e.g. `scope=owner:alice`) -> the user sees and acts only
  on instances carrying one of those tags.

Must not log, store in a Principal, or otherwise echo a password or an Authorization
header; failures are logged with the user name and the reason only, and counted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from events.ids import check_tag
from orchestrator.roles import Principal, Role

log = structlog.get_logger("corral.rapi.auth")

REALM = "Ganeti Remote API"
ACTOR_PREFIX = "rapi:"


class UsersFileError(ValueError):
    """A users file line that cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RapiUser:
    name: str
    scheme: str  # "cleartext" or "ha1"
    secret: str = field(repr=False)  # the cleartext password or the HA1 hex digest
    role: Role
    scope_tags: frozenset[str] = frozenset()

    def check(self, password: str) -> bool:
        if self.scheme == "ha1":
            ha1 = hashlib.md5(f"{self.name}:{REALM}:{password}".encode()).hexdigest()
            return hmac.compare_digest(ha1.lower(), self.secret.lower())
        return hmac.compare_digest(password.encode(), self.secret.encode())

    def principal(self) -> Principal:
        return Principal(name=ACTOR_PREFIX + self.name, role=self.role, scope_tags=self.scope_tags)


def _parse_password(raw: str) -> tuple[str, str]:
    low = raw.lower()
    if low.startswith("{cleartext}"):
        return "cleartext", raw[len("{cleartext}") :]
    if low.startswith("{ha1}"):
        digest = raw[len("{ha1}") :]
        if len(digest) != 32 or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise ValueError("an {HA1} password must be 32 hex digits")
        return "ha1", digest
    if raw.startswith("{"):
        raise ValueError("unknown password scheme (use {CLEARTEXT} or {HA1})")
    return "cleartext", raw


def _parse_options(raw: str) -> tuple[Role, frozenset[str]]:
    role = Role.VIEWER
    scopes: set[str] = set()
    for opt in (o.strip() for o in raw.split(",")):
        if not opt or opt == "read":
            continue
        if opt == "write":
            role = Role.ADMIN if role is Role.ADMIN else Role.OPERATOR
        elif opt == "admin":
            role = Role.ADMIN
        elif opt.startswith("scope="):
            scopes.add(check_tag(opt.partition("=")[2]))
        else:
            raise ValueError(f"unknown option {opt!r} (read, write, admin, scope=TAG)")
    return role, frozenset(scopes)


def parse_users(text: str, *, source: str = "users file") -> dict[str, RapiUser]:
    """The users of a users file's text; UsersFileError naming the line otherwise.
    The error never quotes the password field."""
    users: dict[str, RapiUser] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(None, 2)
        where = f"{source}:{number}"
        if len(parts) < 2:
            raise UsersFileError(f"{where}: expected 'user password [options]'")
        name, password = parts[0], parts[1]
        if name in users:
            raise UsersFileError(f"{where}: user {name!r} is listed twice")
        try:
            scheme, secret = _parse_password(password)
            role, scopes = _parse_options(parts[2] if len(parts) > 2 else "")
        except ValueError as exc:
            raise UsersFileError(f"{where} (user {name!r}): {exc}") from None
        users[name] = RapiUser(
            name=name, scheme=scheme, secret=secret, role=role, scope_tags=scopes
        )
    return users


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResult:
    principal: Principal | None  # None: no credentials were sent
    error: str = ""  # set when credentials were sent and rejected


@dataclass(slots=True, kw_only=True)
class AuthStats:
    """Failed authentications, by reason (`unknown-user`, `bad-password`,
    `malformed`) and by user name as sent."""

    failures: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_user: Counter[str] = field(default_factory=Counter)


class RapiUsers:
    """The users, re-read when the file changes (as Ganeti's RAPI daemon does), and
    the failure counters."""

    def __init__(self, users: Mapping[str, RapiUser], *, path: Path | None = None) -> None:
        self._users = dict(users)
        self._path = path
        self._mtime = path.stat().st_mtime_ns if path is not None else 0
        self.stats = AuthStats()

    @classmethod
    def from_text(cls, text: str) -> RapiUsers:
        return cls(parse_users(text))

    @classmethod
    def from_file(cls, path: Path) -> RapiUsers:
        return cls(parse_users(path.read_text(), source=str(path)), path=path)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._users))

    def _reload_if_changed(self) -> None:
        if self._path is None:
            return
        try:
            mtime = os.stat(self._path).st_mtime_ns
            if mtime == self._mtime:
                return
            users = parse_users(self._path.read_text(), source=str(self._path))
        except (OSError, UsersFileError) as exc:
            log.warning("users file not reloaded; keeping the previous users", error=str(exc))
            return
        self._users, self._mtime = users, mtime
        log.info("users file reloaded", users=len(users))

    def _fail(self, *, reason: str, user: str, peer: str) -> AuthResult:
        self.stats.failures += 1
        self.stats.by_reason[reason] += 1
        self.stats.by_user[user] += 1
        log.warning("rapi authentication failed", user=user, why=reason, peer=peer)
        return AuthResult(principal=None, error=reason)

    def authenticate(self, authorization: str | None, *, peer: str = "") -> AuthResult:
        """The principal for an `Authorization` header value: no header -> no
        principal and no error; a rejected one -> an error (and a count)."""
        self._reload_if_changed()
        if not authorization:
            return AuthResult(principal=None)
        scheme, _, blob = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return self._fail(reason="malformed", user="", peer=peer)
        try:
            decoded = base64.b64decode(blob.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return self._fail(reason="malformed", user="", peer=peer)
        name, sep, password = decoded.partition(":")
        if not sep:
            return self._fail(reason="malformed", user=name, peer=peer)
        user = self._users.get(name)
        if user is None:
            # Same work as a real check, so timing does not tell which names exist.
            RapiUser(name=name, scheme="cleartext", secret="\0", role=Role.VIEWER).check(password)
            return self._fail(reason="unknown-user", user=name, peer=peer)
        if not user.check(password):
            return self._fail(reason="bad-password", user=name, peer=peer)
        return AuthResult(principal=user.principal())
