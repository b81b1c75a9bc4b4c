"""OS images and cloud-init: a catalogue entry's kind (an image, or a Ganeti OS
definition installed on the nodes), an image's source (a file in the nodes' image
directory, or an HTTP(S) URL), its sha256 and format, a definition's OS parameters
(Ganeti's `OSP_*`), and what an instance's cloud-init seed may carry (SSH public
keys, user-data text). Nothing a shell, a path or a YAML document could misread
passes.

Pure: no I/O, no logging.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from events.fields.rules import FieldError, after, before, kind, schema, show

IMAGE_DIR = "/var/lib/corral/images"  # nodehelper.images.IMAGE_DIR
IMAGE_FORMATS = ("raw", "qcow2")  # nodehelper.images.FORMATS
IMAGE_KINDS = ("image", "ganeti-os")
MAX_OS_PARAMS = 32
_OS_PARAM_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # nodehelper.osdef
_OS_PARAM_VALUE_RE = re.compile(r"[ -~]{0,1024}")
MAX_USER_DATA = 64 * 1024
MAX_SSH_KEYS = 32
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_FILE_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?")
_URL_RE = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]{1,2000}")
_SSH_KEY_RE = re.compile(
    r"(ssh-(?:rsa|ed25519|dss)|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]{16,16384}={0,3}( [ -~]{1,200})?"
)


def image_file(source: str) -> str | None:
    """The file name in IMAGE_DIR a source names; None for a URL."""
    if source.startswith(("http://", "https://")):
        return None
    return source.removeprefix(IMAGE_DIR + "/")


def _source(value: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"an image source must be a string, got {kind(value)}")
    if value == "":
        return value  # a Ganeti OS definition has none (events.validation checks the kind)
    if value.startswith(("http://", "https://")):
        parts = urlsplit(value)
        if not _URL_RE.fullmatch(value) or not parts.hostname:
            raise FieldError(f"{show(value)} is not an HTTP(S) URL corral can pass on")
        return value
    name = value.removeprefix(IMAGE_DIR + "/")
    if not value.startswith(IMAGE_DIR + "/") or not _FILE_RE.fullmatch(name) or ".." in name:
        raise FieldError(
            f"{show(value)} is neither an http(s):// URL nor a file directly in {IMAGE_DIR}/ "
            "on the nodes (lowercase letters, digits, '.', '_', '-'; e.g. "
            f"{IMAGE_DIR}/debian-12.qcow2)"
        )
    return value


def _sha256(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise FieldError("a sha256 must be written in quotes (YAML read this one as a number)")
    if value == "":
        return value  # a Ganeti OS definition has none (events.validation checks the kind)
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise FieldError(
            f"{show(value)} is not a sha256: 64 lowercase hex digits (as sha256sum prints)"
        )
    return value


def _format(value: object) -> str:
    if value not in IMAGE_FORMATS:
        raise FieldError(
            f"{show(value)} is not an image format; one of: {', '.join(IMAGE_FORMATS)}"
        )
    return str(value)


def _kind(value: object) -> str:
    if value not in IMAGE_KINDS:
        raise FieldError(f"{show(value)} is not an image kind; one of: {', '.join(IMAGE_KINDS)}")
    return str(value)


def _os_params(value: object) -> tuple[tuple[str, str], ...]:
    """A Ganeti OS definition's parameters: (name, value) pairs, sorted by name; a
    mapping is taken too. Each reaches its script as `OSP_NAME` (upper-cased, '-'
    as '_'), never through a shell."""
    if isinstance(value, dict):
        items: list[object] = list(value.items())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise FieldError(f"parameters must be a mapping of names to values, got {kind(value)}")
    pairs: dict[str, str] = {}
    for item in items:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise FieldError("parameters must be a mapping of names to values")
        name, val = item
        if isinstance(val, bool):
            val = "yes" if val else "no"  # YAML's yes/no, as Ganeti's scripts spell them
        if isinstance(val, int | float):
            val = str(val)
        if not isinstance(name, str) or not _OS_PARAM_RE.fullmatch(name):
            raise FieldError(
                f"parameter name {show(name)} must be lowercase letters, digits, '_' or '-' "
                "(at most 63, as in a definition's parameters.list)"
            )
        if not isinstance(val, str) or not _OS_PARAM_VALUE_RE.fullmatch(val):
            raise FieldError(
                f"parameter {name}: the value must be printable ASCII text of at most 1024 "
                "characters"
            )
        pairs[name] = val
    if len(pairs) > MAX_OS_PARAMS:
        raise FieldError(f"at most {MAX_OS_PARAMS} parameters, got {len(pairs)}")
    return tuple(sorted(pairs.items()))


def _ssh_key(value: object) -> str:
    if not isinstance(value, str) or not _SSH_KEY_RE.fullmatch(value.strip()):
        raise FieldError(
            "not an OpenSSH public key on one line (`ssh-ed25519 AAAA... comment`, as in "
            "a .pub file)"
        )
    return value.strip()


def _user_data(value: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"user_data must be text (a YAML block with `|`), got {kind(value)}")
    if len(value.encode()) > MAX_USER_DATA:
        raise FieldError(f"user_data is more than {MAX_USER_DATA // 1024} KiB")
    if "\0" in value:
        raise FieldError("user_data must not hold NUL characters")
    return value


def _keys(value: tuple[str, ...]) -> tuple[str, ...]:
    if len(value) > MAX_SSH_KEYS:
        raise FieldError(f"at most {MAX_SSH_KEYS} SSH keys, got {len(value)}")
    return value


ImageSource = Annotated[str, before(_source), schema(type="string")]
Sha256 = Annotated[str, before(_sha256), schema(type="string", pattern="^[0-9a-f]{64}$")]
ImageKind = Annotated[str, before(_kind), schema(type="string", enum=list(IMAGE_KINDS))]
OsParams = Annotated[
    tuple[tuple[str, str], ...],
    before(_os_params),
    schema(type="object", additionalProperties={"type": "string"}),
]
ImageFormat = Annotated[str, before(_format), schema(type="string", enum=list(IMAGE_FORMATS))]
SshKey = Annotated[str, before(_ssh_key), schema(type="string")]
SshKeys = Annotated[tuple[SshKey, ...], after(_keys)]
UserData = Annotated[str, before(_user_data), schema(type="string")]
