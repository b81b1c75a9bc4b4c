"""Addresses and NICs: hostnames and IP addresses that SSH and DRBD are pointed at,
MAC addresses, bridge/interface names, NIC modes, etcd endpoints. Nothing a shell or
ssh could misread passes.

Pure: no I/O, no logging.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import urlsplit

from events.fields.names import named
from events.fields.rules import FieldError, after, before, kind, schema, show
from events.fields.sizes import whole

_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_MAC_PREFIX_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){2}")
DEFAULT_MAC_PREFIX = "aa:00:00"  # Ganeti's default cluster mac_prefix
NIC_MODES = ("bridged", "routed", "openvswitch")
MAX_LINK = 15  # a Linux interface name
MAX_NAMESERVERS = 3  # what a resolv.conf holds


def host_address(value: object) -> str:
    """A hostname or an IP address: nothing a shell or ssh could misread."""
    if not isinstance(value, str):
        raise FieldError(f"expected a hostname or IP address, got {kind(value)}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if len(value) > 253 or not _HOSTNAME_RE.fullmatch(value):
        raise FieldError(
            f"{show(value)} is not a hostname or IP address (letters, digits, '-' and '.' "
            "only, no spaces, no shell characters)"
        )
    return value


def ip_address(value: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"expected an IP address, got {kind(value)}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise FieldError(f"{show(value)} is not an IPv4 or IPv6 address") from None


def mac_address(value: object) -> str:
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value.lower()):
        raise FieldError(
            f"{show(value)} is not a MAC address; expected six hex pairs like "
            "'aa:00:00:00:00:01' (quote it)"
        )
    lowered = value.lower()
    if int(lowered[:2], 16) & 1:
        raise FieldError(f"{show(value)} is a multicast MAC address; use a unicast one")
    if lowered == "00:00:00:00:00:00":
        raise FieldError("00:00:00:00:00:00 is not a usable MAC address")
    return lowered


def mac_prefix(value: object) -> str:
    """The first three octets of generated MACs (Ganeti's cluster `mac_prefix`)."""
    if not isinstance(value, str) or not _MAC_PREFIX_RE.fullmatch(value.lower()):
        raise FieldError(
            f"{show(value)} is not a MAC prefix; expected three hex pairs like "
            f"'{DEFAULT_MAC_PREFIX}' (quote it)"
        )
    lowered = value.lower()
    if int(lowered[:2], 16) & 1:
        raise FieldError(
            f"{show(value)} is a multicast prefix (the first octet is odd); generated MACs "
            "must be unicast: use an even first octet, e.g. 'aa:00:00'"
        )
    return lowered


def locally_administered(prefix: str) -> bool:
    """The prefix's first octet has the locally administered bit (0x02): MACs under
    it cannot clash with a vendor's burnt-in addresses."""
    return bool(int(prefix[:2], 16) & 2)


def interface(value: str) -> tuple[str, int | None]:
    """A NIC's `ip` as the file writes it: an address, or ADDRESS/PREFIX (the
    prefix length, `192.0.2.10/24`): (address, prefix or None)."""
    address, slash, prefix = value.partition("/")
    ip = ip_address(address)
    if not slash:
        return ip, None
    if not prefix.isdigit() or len(prefix) > 3:
        raise FieldError(
            f"{show(value)}: the prefix length after '/' must be a number (e.g. '{ip}/24')"
        )
    return ip, int(prefix)


def nic_address_problems(
    *, ip: str | None, prefix_len: int | None, gateway: str | None, nameservers: tuple[str, ...]
) -> Iterator[tuple[str, str]]:
    """(field, message) for a NIC's addressing whose fields do not agree: a prefix
    too long for the address, an address that is its network's own or broadcast
    address, a gateway without a fixed address, of the other family or outside the
    address's network, too many nameservers."""
    if len(nameservers) > MAX_NAMESERVERS:
        yield "nameservers", f"at most {MAX_NAMESERVERS} nameservers, got {len(nameservers)}"
    if ip is None:
        if prefix_len is not None:
            yield "prefix_len", "a prefix length needs a fixed ip"
        if gateway is not None:
            yield "gateway", "a gateway needs a fixed ip (with DHCP the DHCP server gives it)"
        return
    addr = ipaddress.ip_address(ip)
    if prefix_len is not None and prefix_len > addr.max_prefixlen:
        yield "prefix_len", f"/{prefix_len} is longer than an IPv{addr.version} address"
        return
    net = ipaddress.ip_interface(f"{ip}/{prefix_len or default_prefix(addr)}").network
    if net.prefixlen < addr.max_prefixlen - 1 and addr in (
        net.network_address,
        *([net.broadcast_address] if addr.version == 4 else []),
    ):
        yield "ip", f"{ip} is the network's own address in {net}; use a host address"
    if gateway is None:
        return
    gw = ipaddress.ip_address(gateway)
    if gw.version != addr.version:
        yield "gateway", f"gateway {gateway} is IPv{gw.version} but ip {ip} is IPv{addr.version}"
    elif gw == addr:
        yield "gateway", f"gateway {gateway} is the NIC's own address"
    elif gw not in net:
        yield "gateway", f"gateway {gateway} is not in the NIC's network {net}"


def default_prefix(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """The prefix length of an `ip` given without one: /24 (IPv4) or /64 (IPv6)."""
    return 24 if addr.version == 4 else 64


def _link(value: str) -> str:
    if len(value) > MAX_LINK:
        raise FieldError(
            f"nic link {value!r} is longer than {MAX_LINK} characters (a Linux interface)"
        )
    return value


def _mode(value: object) -> str:
    if not isinstance(value, str) or value not in NIC_MODES:
        raise FieldError(f"{show(value)} is not one of: {', '.join(NIC_MODES)}")
    return value


def etcd_url(value: object) -> str:
    """An etcd endpoint: http(s)://host[:port], nothing else."""
    expected = "expected an etcd URL like 'http://10.0.0.1:2379'"
    if not isinstance(value, str):
        raise FieldError(f"{expected}, got {kind(value)}")
    bad = f"{show(value)} is not an etcd endpoint; {expected}"
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise FieldError(bad)
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise FieldError(bad) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise FieldError(bad)
    return value.rstrip("/")


HostAddress = Annotated[
    str, before(host_address), schema(type="string", maxLength=253, description="hostname or IP")
]
IpAddress = Annotated[str, before(ip_address), schema(type="string", format="ip")]
MacAddress = Annotated[
    str, before(mac_address), schema(type="string", pattern="^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
]
PrefixLen = Annotated[
    int, whole(1, 128), schema(type="integer", minimum=1, maximum=128, description="/N")
]
MacPrefix = Annotated[
    str, before(mac_prefix), schema(type="string", pattern="^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){2}$")
]
Link = Annotated[
    str, named("nic link"), after(_link), schema(type="string", pattern="^[a-z0-9._-]{1,15}$")
]
NicMode = Annotated[str, before(_mode), schema(type="string", enum=list(NIC_MODES))]
EtcdUrl = Annotated[str, before(etcd_url), schema(type="string", format="uri")]
