"""API tokens for the native HTTP API: a tokens file (a YAML or JSON list of
`{name, role, token_sha256, scope_tags?}`) turned into `roles.Principal`s from an
`Authorization: Bearer TOKEN` header, and a helper that mints a new token entry
(the token is shown once; only its sha256 is stored).

Must not: keep, log or compare plain tokens (only their sha256, compared in constant
time against every entry), or decide what a principal may do (that is
`orchestrator.roles`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from events.ids import InvalidName, check_name, check_tag
from orchestrator.roles import Principal, Role

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_KEYS = frozenset({"name", "role", "token_sha256", "scope_tags"})
TOKEN_PREFIX = "corral_"
MAX_TOKEN_LENGTH = 512
ACTOR_PREFIX = "api:"


class TokensFileError(ValueError):
    """A tokens file that cannot be used; says which entry and field."""


class AuthFailure(StrEnum):
    """Why a request was not authenticated (a metrics label; never the token)."""

    MISSING = "missing"  # no Authorization header
    MALFORMED = "malformed"  # not `Bearer <token>`
    UNKNOWN = "unknown"  # no entry has this token's hash


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenEntry:
    name: str
    role: Role
    token_sha256: str
    scope_tags: frozenset[str] = frozenset()

    def principal(self) -> Principal:
        return Principal(name=ACTOR_PREFIX + self.name, role=self.role, scope_tags=self.scope_tags)

    def plain(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "role": self.role.value,
            "token_sha256": self.token_sha256,
        }
        if self.scope_tags:
            out["scope_tags"] = sorted(self.scope_tags)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResult:
    principal: Principal | None
    failure: AuthFailure | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _entry(item: object, index: int, source: str) -> TokenEntry:
    where = f"{source}: entry {index + 1}"
    if not isinstance(item, dict):
        raise TokensFileError(f"{where}: expected a mapping with name, role, token_sha256")
    unknown = sorted(str(k) for k in item if k not in _ENTRY_KEYS)
    if unknown:
        raise TokensFileError(f"{where}: unknown field {unknown[0]!r}")
    for key in ("name", "role", "token_sha256"):
        if key not in item:
            raise TokensFileError(f"{where}: field {key!r} is missing")
    try:
        name = check_name(item["name"], what="name")
    except InvalidName as exc:
        raise TokensFileError(f"{where}: {exc}") from None
    where = f"{source}: token {name}"
    try:
        role = Role(str(item["role"]))
    except ValueError:
        raise TokensFileError(
            f"{where}: role must be one of {', '.join(r.value for r in Role)}"
        ) from None
    digest = item["token_sha256"]
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise TokensFileError(f"{where}: token_sha256 must be 64 lowercase hex digits")
    raw_tags = item.get("scope_tags") or []
    if not isinstance(raw_tags, list):
        raise TokensFileError(f"{where}: scope_tags must be a list of tags")
    try:
        tags = frozenset(check_tag(t) for t in raw_tags)
    except InvalidName as exc:
        raise TokensFileError(f"{where}: scope_tags: {exc}") from None
    return TokenEntry(name=name, role=role, token_sha256=digest, scope_tags=tags)


def parse_tokens(text: str, *, source: str = "<tokens>") -> tuple[TokenEntry, ...]:
    """A YAML (or JSON, which YAML reads too) list of entries, or `{tokens: [...]}`."""
    try:
        doc = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise TokensFileError(f"{source}: not YAML or JSON ({type(exc).__name__})") from None
    if doc is None:
        doc = []
    if isinstance(doc, dict) and set(doc) == {"tokens"}:
        doc = doc["tokens"] or []
    if not isinstance(doc, list):
        raise TokensFileError(f"{source}: expected a list of token entries")
    entries = tuple(_entry(item, i, source) for i, item in enumerate(doc))
    names: set[str] = set()
    digests: set[str] = set()
    for e in entries:
        if e.name in names:
            raise TokensFileError(f"{source}: token name {e.name!r} appears twice")
        if e.token_sha256 in digests:
            raise TokensFileError(f"{source}: token {e.name} has the same hash as another")
        names.add(e.name)
        digests.add(e.token_sha256)
    return entries


def load_tokens(path: Path) -> tuple[TokenEntry, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokensFileError(f"{path}: cannot read ({type(exc).__name__})") from None
    return parse_tokens(text, source=str(path))


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_token_entry(
    *, name: str, role: Role, scope_tags: Iterable[str] = ()
) -> tuple[str, TokenEntry]:
    """A fresh random token and its entry. Show the token to the person once;
    store only the entry."""
    token = new_token()
    entry = TokenEntry(
        name=check_name(name, what="name"),
        role=Role(role),
        token_sha256=hash_token(token),
        scope_tags=frozenset(check_tag(t) for t in scope_tags),
    )
    return token, entry


def dump_tokens(entries: Sequence[TokenEntry], *, as_json: bool) -> str:
    plain = [e.plain() for e in entries]
    if as_json:
        return json.dumps(plain, indent=2) + "\n"
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(plain, out)
    return out.getvalue()


def add_token(path: Path, *, name: str, role: Role, scope_tags: Iterable[str] = ()) -> str:
    """Mint a token named `name`, add its entry to the tokens file at `path`
    (created with mode 0600 when missing; JSON when it ends in .json, else YAML)
    and return the token, which is stored nowhere. A name already present is
    refused (remove its entry first to rotate it)."""
    entries = load_tokens(path) if path.exists() else ()
    if any(e.name == name for e in entries):
        raise TokensFileError(f"{path}: token name {name!r} already exists")
    token, entry = new_token_entry(name=name, role=role, scope_tags=scope_tags)
    text = dump_tokens([*entries, entry], as_json=path.suffix == ".json")
    write_private(path, text)
    return token


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, mode 0600, atomically: through a new file made
    with O_EXCL and O_NOFOLLOW next to it (a symlink or a file planted at the
    temporary name makes this fail instead of writing through it), then renamed."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiAuth:
    """The loaded token entries; `authenticate` maps a header to a principal."""

    entries: tuple[TokenEntry, ...] = ()

    @classmethod
    def from_file(cls, path: Path) -> ApiAuth:
        return cls(entries=load_tokens(path))

    def authenticate(self, authorization: str | None) -> AuthResult:
        if not authorization:
            return AuthResult(principal=None, failure=AuthFailure.MISSING)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
            return AuthResult(principal=None, failure=AuthFailure.MALFORMED)
        presented = hash_token(token).encode()
        found: TokenEntry | None = None
        # Compare with every entry, in constant time each, so neither the
        # comparison nor the loop leaks which prefix or entry came close.
        for entry in self.entries:
            if hmac.compare_digest(presented, entry.token_sha256.encode()):
                found = entry
        if found is None:
            return AuthResult(principal=None, failure=AuthFailure.UNKNOWN)
        return AuthResult(principal=found.principal())
