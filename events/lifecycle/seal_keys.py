"""The keys that sign audit seals: Ed25519 key pairs that live on the orchestrator
hosts, outside etcd, so someone who can write etcd cannot make a seal verify.

- A signing key: one PEM private key file (mode 0600) on each orchestrator host,
  `corral serve --seal-key FILE` (default /etc/corral/seal.key).
- Verifying keys: a directory of PEM public keys (`*.pub`, default
  /etc/corral/seal-keys/), every key that ever signed, so seals made before a
  rotation (in etcd or in the archive) still verify. Auditors need only these.

A key's id is the first 16 hex digits of the SHA-256 of its raw public key; each
seal names the id of the key that signed it. Must not log or print private keys.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"


class SealKeyError(ValueError):
    """A seal key file that cannot be used; one line naming it."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True, slots=True)
class SealSigner:
    """The private key the orchestrator signs seals with."""

    private: Ed25519PrivateKey
    key_id: str

    @classmethod
    def from_file(cls, path: Path) -> SealSigner:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SealKeyError(f"seal key {path}: {exc.strerror or exc}") from None
        if path.stat().st_mode & 0o077:
            raise SealKeyError(f"seal key {path} is readable by others: chmod 600 it")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise SealKeyError(f"seal key {path} is not a PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SealKeyError(f"seal key {path} is not an Ed25519 key")
        return cls(private=key, key_id=key_id(key.public_key()))

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


@dataclass(frozen=True, slots=True)
class SealKeys:
    """The public keys seals may be signed with, by key id."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def from_dir(cls, directory: Path) -> SealKeys:
        """Every `*.pub` in `directory`; SealKeyError for one that does not load."""
        if not directory.is_dir():
            raise SealKeyError(f"seal keys: {directory} is not a directory")
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(directory.glob("*.pub")):
            try:
                key = serialization.load_pem_public_key(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise SealKeyError(f"seal key {path} does not load ({exc})") from None
            if not isinstance(key, Ed25519PublicKey):
                raise SealKeyError(f"seal key {path} is not an Ed25519 public key")
            keys[key_id(key)] = key
        if not keys:
            raise SealKeyError(f"seal keys: {directory} holds no *.pub key")
        return cls(keys=keys)

    def check(self, *, key: str, message: bytes, signature: bytes) -> str:
        """ "" when `signature` is `key`'s over `message`, else why not."""
        public = self.keys.get(key)
        if public is None:
            return f"signed with key {key}, which is not among the trusted seal keys"
        try:
            public.verify(signature, message)
        except InvalidSignature:
            return f"its signature (key {key}) does not verify: the seal was rewritten"
        return ""


def new_key_pair(private_path: Path, public_dir: Path) -> str:
    """Write a new Ed25519 private key to `private_path` (0600, never over an
    existing file or through a symlink) and its public key to
    `public_dir/<key id>.pub`; return the key id."""
    key = Ed25519PrivateKey.generate()
    kid = key_id(key.public_key())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise SealKeyError(f"{private_path} exists: move it away to make a new key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_dir.mkdir(parents=True, exist_ok=True)
    (public_dir / f"{kid}.pub").write_bytes(_public_pem(key.public_key()))
    return kid
