"""RAPI users: Ganeti's users file (`/var/lib/ganeti/rapi/users` format) read into
corral principals, and HTTP Basic authentication against it.

File format, one user per line (blank lines and `#` comments ignored):

    user password [option,option,...]

- password: an argon2id hash (`{ARGON2}$argon2id$...` or the bare `$argon2id$...`
  string; `corral rapi-passwd USER` makes one), or Ganeti's `{HA1}<md5 hex of
  "user:Ganeti Remote API:secret">` (salted by user and realm; still read so an
  existing Ganeti users file keeps working, with a warning at load: MD5 is fast to
  guess if the file leaks). Cleartext (`{CLEARTEXT}secret` or a bare `secret`,
  Ganeti's other forms) is refused with the line named. Prefixes case-insensitive;
- options (comma-separated, Ganeti's): none or `read` -> corral viewer, `write` ->
  operator; corral's extensions: `admin` -> admin (create/remove instances, tags),
  `scope=TAG` (repeatable, e.g. `scope=owner:alice`) -> the user sees and acts only
  on instances carrying one of those tags.

Failed logins are counted per client address in a bounded table (the user name
sent is attacker-chosen and would grow it without end); an address with
FAIL_LIMIT failures within FAIL_WINDOW_S is refused (429) until the window passes,
before any password is checked. Successful argon2 checks are remembered for a
while (keyed by a keyed hash of name and password) so a client sending Basic
credentials on every request does not pay the hash each time.

Must not log, store in a Principal, or otherwise echo a password or an Authorization
header; failures are logged with the user name and the reason only, and counted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import os
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from argon2 import PasswordHasher, extract_parameters, profiles
from argon2.exceptions import InvalidHashError, VerificationError

from events.ids import check_tag
from orchestrator.roles import Principal, Role

log = structlog.get_logger("corral.rapi.auth")

REALM = "Ganeti Remote API"
ACTOR_PREFIX = "rapi:"
THROTTLED = "throttled"
FAIL_LIMIT = 10
FAIL_WINDOW_S = 300.0
MAX_PEERS = 4096
CACHE_S = 300.0
MAX_CACHED = 1024
_HASHER = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)
# A process-local key: the verified-credentials cache holds HMACs, never passwords.
_CACHE_KEY = secrets.token_bytes(32)


@functools.cache
def _dummy() -> str:
    """Checked against when the user is unknown, so a miss costs what a real
    check does (made on first use: hashing takes a while on purpose)."""
    return _HASHER.hash(secrets.token_hex(16))


class UsersFileError(ValueError):
    """A users file line that cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RapiUser:
    name: str
    scheme: str  # "argon2" or "ha1"
    secret: str = field(repr=False)  # the argon2 hash string or the HA1 hex digest
    role: Role
    scope_tags: frozenset[str] = frozenset()

    def check(self, password: str) -> bool:
        if self.scheme == "ha1":
            ha1 = hashlib.md5(f"{self.name}:{REALM}:{password}".encode()).hexdigest()
            return hmac.compare_digest(ha1.lower(), self.secret.lower())
        return _argon2_ok(self.secret, password)

    def principal(self) -> Principal:
        return Principal(name=ACTOR_PREFIX + self.name, role=self.role, scope_tags=self.scope_tags)


def _argon2_ok(encoded: str, password: str) -> bool:
    try:
        return bool(_HASHER.verify(encoded, password))
    except (VerificationError, InvalidHashError):
        return False


def hash_password(password: str) -> str:
    """An argon2id hash for a users file line (`{ARGON2}` + this)."""
    return _HASHER.hash(password)


def _parse_password(raw: str) -> tuple[str, str]:
    low = raw.lower()
    if low.startswith("{argon2}") or raw.startswith("$argon2id$"):
        encoded = raw[len("{argon2}") :] if low.startswith("{argon2}") else raw
        if not encoded.startswith("$argon2id$"):
            raise ValueError("an {ARGON2} password must be an $argon2id$ hash")
        try:
            extract_parameters(encoded)
        except InvalidHashError:
            raise ValueError("the {ARGON2} hash does not parse") from None
        return "argon2", encoded
    if low.startswith("{ha1}"):
        digest = raw[len("{ha1}") :]
        if len(digest) != 32 or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise ValueError("an {HA1} password must be 32 hex digits")
        return "ha1", digest
    if low.startswith("{cleartext}") or not raw.startswith("{"):
        raise ValueError(
            "cleartext passwords are not accepted: replace it with the line "
            "`corral rapi-passwd USER` prints (argon2id), or Ganeti's {HA1} form"
        )
    raise ValueError("unknown password scheme (use {ARGON2} or {HA1})")


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
    weak = sorted(u.name for u in users.values() if u.scheme == "ha1")
    if weak:
        log.warning(
            "users with {HA1} (MD5) passwords: re-hash them with corral rapi-passwd",
            source=source,
            users=weak,
        )
    return users


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResult:
    principal: Principal | None  # None: no credentials were sent
    error: str = ""  # set when credentials were sent and rejected


@dataclass(slots=True, kw_only=True)
class AuthStats:
    """Failed authentications, by reason (`unknown-user`, `bad-password`,
    `malformed`, `throttled`): a fixed set of keys, never anything a client sent."""

    failures: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)


class FailureTable:
    """Failed logins per client address within FAIL_WINDOW_S, at most MAX_PEERS
    addresses (the least recently failing forgotten first)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._peers: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._peers)

    def failures(self, peer: str) -> int:
        count, since = self._peers.get(peer, (0, 0.0))
        return count if self._clock() - since < FAIL_WINDOW_S else 0

    def blocked(self, peer: str) -> bool:
        return self.failures(peer) >= FAIL_LIMIT

    def record(self, peer: str) -> None:
        now = self._clock()
        count, since = self._peers.pop(peer, (0, now))
        if now - since >= FAIL_WINDOW_S:
            count, since = 0, now
        self._peers[peer] = (count + 1, since)
        while len(self._peers) > MAX_PEERS:
            self._peers.popitem(last=False)


class RapiUsers:
    """The users, re-read when the file changes (as Ganeti's RAPI daemon does), and
    the failure counters."""

    def __init__(
        self,
        users: Mapping[str, RapiUser],
        *,
        path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = dict(users)
        self._path = path
        self._mtime = path.stat().st_mtime_ns if path is not None else 0
        self._clock = clock
        self.stats = AuthStats()
        self.failed = FailureTable(clock=clock)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._hashing = asyncio.Semaphore(2)

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
        if reason != THROTTLED:
            self.failed.record(peer)
        log.warning("rapi authentication failed", user=user[:64], why=reason, peer=peer)
        return AuthResult(principal=None, error=reason)

    def _cached(self, user: RapiUser, password: str) -> bytes | None:
        """The cache key of a credential, or None when it was verified lately."""
        key = hmac.new(_CACHE_KEY, f"{user.name}\0{user.secret}\0{password}".encode(), "sha256")
        digest = key.digest()
        until = self._verified.get(digest)
        return None if until is not None and until > self._clock() else digest

    def _remember(self, digest: bytes) -> None:
        self._verified[digest] = self._clock() + CACHE_S
        self._verified.move_to_end(digest)
        while len(self._verified) > MAX_CACHED:
            self._verified.popitem(last=False)

    def _prepare(
        self, authorization: str | None, peer: str
    ) -> AuthResult | tuple[str, str, RapiUser | None]:
        """An answer already, or (name, password, user) still to be checked."""
        self._reload_if_changed()
        if not authorization:
            return AuthResult(principal=None)
        if self.failed.blocked(peer):
            return self._fail(reason=THROTTLED, user="", peer=peer)
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
        return name, password, self._users.get(name)

    def _finish(
        self, name: str, user: RapiUser | None, ok: bool, digest: bytes | None, peer: str
    ) -> AuthResult:
        if user is None:
            return self._fail(reason="unknown-user", user=name, peer=peer)
        if not ok:
            return self._fail(reason="bad-password", user=name, peer=peer)
        if digest is not None:
            self._remember(digest)
        return AuthResult(principal=user.principal())

    def authenticate(self, authorization: str | None, *, peer: str = "") -> AuthResult:
        """The principal for an `Authorization` header value: no header -> no
        principal and no error; a rejected one -> an error (and a count).
        Checks the password here; a server calls `authenticate_async`."""
        prepared = self._prepare(authorization, peer)
        if isinstance(prepared, AuthResult):
            return prepared
        name, password, user = prepared
        digest = self._cached(user, password) if user is not None else b""
        ok = digest is None or _verify(user, password)
        return self._finish(name, user, ok, digest or None, peer)

    async def authenticate_async(self, authorization: str | None, *, peer: str = "") -> AuthResult:
        """`authenticate` with the password hash computed in a worker thread (at
        most two at a time): argon2 takes tens of milliseconds on purpose, and
        the event loop also runs the reactors."""
        prepared = self._prepare(authorization, peer)
        if isinstance(prepared, AuthResult):
            return prepared
        name, password, user = prepared
        digest = self._cached(user, password) if user is not None else b""
        ok = digest is None
        if not ok:
            async with self._hashing:
                ok = await asyncio.to_thread(_verify, user, password)
        return self._finish(name, user, ok, digest or None, peer)


def _verify(user: RapiUser | None, password: str) -> bool:
    """The password check; for an unknown user the same work against a dummy hash,
    so timing does not tell which names exist."""
    if user is None:
        _argon2_ok(_dummy(), password)
        return False
    return user.check(password)
