"""What the node helper accepts: one full-string check per kind of value (names,
volume groups, sizes, minors, ports, node ids, addresses, terms) and exact-key
JSON objects, each refusal a `Refused` naming the field and the value.

Standard library only. Decides nothing and touches nothing: the verbs call these
before they act, so a refused request changes nothing on the node.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

EXIT_REFUSED = 64  # EX_USAGE: the request does not validate


class Refused(Exception):
    """A request the helper will not run; the message names the field."""


# Instance and node names as corral validates them (events.ids): DNS-label-like.
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?")
# Corral's disks (LVs and DRBD resources): INSTANCE-dINDEX. The helper touches no
# other LV or resource, so a volume group shared with the host's own volumes is safe.
DISK_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?-d[0-9]{1,4}")
# LVM's own rule for VG names, minus a leading '-' (an option) and '.'/'..'.
VG_RE = re.compile(r"[A-Za-z0-9+_][A-Za-z0-9+_.-]{0,126}|\.[A-Za-z0-9+_][A-Za-z0-9+_.-]{0,125}")
TERM_RE = re.compile(r"[1-9][0-9]{0,17}")
DECIMAL_RE = re.compile(r"0|[1-9][0-9]{0,17}")
IP_CHARS_RE = re.compile(r"[0-9a-fA-F:.]{2,45}")

SIZE_MIB_MAX = 64 * 1024 * 1024  # 64 TiB
MINOR_MAX = (1 << 20) - 1  # DRBD's limit
NODE_ID_MAX = 31  # DRBD 9's limit
MEMORY_MIB_MAX = 4 * 1024 * 1024
VCPUS_MAX = 512
DISKS_MAX = 16


def check_name(value: object, *, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or ".." in value:
        raise Refused(
            f"{what} {value!r} is not a name (lowercase letters, digits, '.', '_', '-';"
            " at most 63; starting and ending with a letter or digit)"
        )
    return value


def check_disk(value: object, *, what: str = "disk") -> str:
    if not isinstance(value, str) or not DISK_RE.fullmatch(value) or ".." in value:
        raise Refused(f"{what} {value!r} is not a corral disk name (INSTANCE-dN)")
    return value


def check_vg(value: object) -> str:
    if not isinstance(value, str) or not VG_RE.fullmatch(value):
        raise Refused(f"volume group {value!r} is not a volume group name")
    return value


def check_number(value: object, *, what: str, low: int, high: int) -> int:
    """An integer in [low, high]: a JSON integer (not a bool) or a decimal string."""
    if isinstance(value, str) and DECIMAL_RE.fullmatch(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Refused(f"{what} {value!r} is not an integer in {low}..{high}")
    return value


def check_size_mib(value: object) -> int:
    return check_number(value, what="size in MiB", low=1, high=SIZE_MIB_MAX)


def check_term(value: object) -> int:
    if not isinstance(value, str) or not TERM_RE.fullmatch(value):
        raise Refused(f"term {value!r} is not a positive integer")
    return int(value)


def check_address(value: object, *, what: str) -> str:
    """An IPv4 or IPv6 address, written as the address itself (no port, no zone)."""
    if isinstance(value, str) and IP_CHARS_RE.fullmatch(value):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
    raise Refused(f"{what} {value!r} is not an IP address")


def check_flag(value: object, *, what: str) -> bool:
    if not isinstance(value, bool):
        raise Refused(f"{what} {value!r} is not true or false")
    return value


def check_text(value: object, *, what: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise Refused(f"{what} must be a string of at most {limit} characters")
    return value


def check_object(
    value: object, *, what: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """A JSON object with exactly the `required` keys and some of the `optional`
    ones: an unknown key is refused, never ignored."""
    if not isinstance(value, dict):
        raise Refused(f"{what} must be a JSON object")
    unknown = sorted(set(value) - required - optional)
    if unknown:
        raise Refused(f"{what}: unknown field {unknown[0]!r}")
    missing = sorted(required - set(value))
    if missing:
        raise Refused(f"{what}: missing field {missing[0]!r}")
    return value


def parse_json_body(data: bytes, *, what: str, limit: int = 64 * 1024) -> object:
    if len(data) > limit:
        raise Refused(f"{what}: request larger than {limit} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(f"{what}: request is not JSON: {exc}") from None
