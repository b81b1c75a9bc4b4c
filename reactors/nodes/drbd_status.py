"""DRBD state as the real tools print it, for both kernel module versions: the
module's version (`/proc/drbd`'s first line), `drbdsetup status --json` (DRBD 9
only; 8.4's drbdsetup refuses it with exit status 20), `drbdsetup events2 --now
[--statistics]` (8.4 and 9), and the `on HOST {` lines of corral's resource files,
which name the peer that 8.4's events2 calls only `peer`.

Pure: no I/O, no logging. Every format is checked against captures from real
nodes under tests/fixtures/real/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from events.model import DrbdPeerObs, DrbdResourceObs


class DrbdParseError(ValueError):
    def __init__(self, command: str, detail: str) -> None:
        super().__init__(f"{command}: {detail}")
        self.command = command


_VERSION = re.compile(r"^version: (\d+\.\d+\.\d+)\S* \(api:")


def parse_drbd_version(text: str) -> str:
    """'8.4.11' or '9.2.5' from /proc/drbd's first line; '' when the module is not
    loaded (no /proc/drbd)."""
    for line in text.splitlines():
        m = _VERSION.match(line.strip())
        if m:
            return m.group(1)
    return ""


def drbd_major(version: str) -> int:
    """8 or 9 (0 when unknown)."""
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


_ON_LINE = re.compile(r"^/etc/drbd\.d/([A-Za-z0-9_.-]+)\.res:\s*on\s+([A-Za-z0-9_.-]+)\s*\{")


def parse_resource_hosts(text: str) -> dict[str, tuple[str, ...]]:
    """`grep -H` of the `on HOST {` lines in /etc/drbd.d/*.res: resource -> hosts."""
    hosts: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = _ON_LINE.match(line)
        if m:
            hosts.setdefault(m.group(1), []).append(m.group(2))
    return {res: tuple(names) for res, names in hosts.items()}


def peers_from_hosts(hosts: Mapping[str, tuple[str, ...]], *, me: str) -> dict[str, str]:
    """resource -> its peer's host name, for two-node resources naming `me`."""
    peers = {}
    for res, names in hosts.items():
        others = [n for n in names if n != me]
        if len(others) == 1 and len(names) == 2:
            peers[res] = others[0]
    return peers


def parse_drbd_status_json(text: str) -> tuple[DrbdResourceObs, ...]:
    text = text.strip()
    if not text:
        return ()
    try:
        doc = json.loads(text)
        resources = []
        for res in doc:
            devices = res.get("devices") or [{}]
            peers = []
            for conn in res.get("connections", []):
                pdev = (conn.get("peer_devices") or [{}])[0]
                peers.append(
                    DrbdPeerObs(
                        peer=str(conn["name"]),
                        connection=str(conn["connection-state"]),
                        peer_role=str(conn.get("peer-role", "Unknown")),
                        peer_disk=str(pdev.get("peer-disk-state", "DUnknown")),
                        replication=str(pdev.get("replication-state", "Off")),
                        percent_in_sync=float(pdev.get("percent-in-sync", 100.0)),
                    )
                )
            resources.append(
                DrbdResourceObs(
                    name=str(res["name"]),
                    role=str(res["role"]),
                    disk=str(devices[0].get("disk-state", "DUnknown")),
                    minor=int(devices[0]["minor"]) if "minor" in devices[0] else None,
                    peers=tuple(sorted(peers, key=lambda p: p.peer)),
                )
            )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DrbdParseError("drbdsetup status --json", f"unexpected document: {exc}") from exc
    return tuple(sorted(resources, key=lambda r: r.name))


_EVENTS2_KINDS = frozenset({"resource", "connection", "device", "peer-device", "path"})


def _fields(words: list[str], line: str) -> dict[str, str]:
    fields = {}
    for word in words:
        key, sep, value = word.partition(":")
        if not sep:
            raise DrbdParseError("drbdsetup events2", f"not key:value: {word!r} in {line[:80]!r}")
        fields[key] = value
    return fields


def parse_drbd_events2(text: str, *, peers: Mapping[str, str]) -> tuple[DrbdResourceObs, ...]:
    """`drbdsetup events2 --now [--statistics]`: one `exists KIND key:value...` line
    per object, ending with `exists -`. DRBD 9 names a connection after the peer's
    host (conn-name:node2); 8.4 calls every connection `peer`, so the peer's name
    comes from `peers` (resource -> peer host, from the resource files)."""
    resources: dict[str, dict[str, str]] = {}
    devices: dict[str, dict[str, str]] = {}
    conns: dict[tuple[str, str], dict[str, str]] = {}
    peer_devs: dict[tuple[str, str], dict[str, str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        words = line.split()
        if words[0] != "exists":
            raise DrbdParseError("drbdsetup events2", f"not an 'exists' line: {line[:80]!r}")
        if words[1:] == ["-"]:
            break
        if len(words) < 3 or words[1] not in _EVENTS2_KINDS:
            raise DrbdParseError("drbdsetup events2", f"unknown object in {line[:80]!r}")
        kind = words[1]
        fields = _fields(words[2:], line)
        name = fields.get("name")
        if not name:
            raise DrbdParseError("drbdsetup events2", f"no name: {line[:80]!r}")
        if kind == "resource":
            resources[name] = fields
        elif kind == "device" and fields.get("volume", "0") == "0":
            devices[name] = fields
        elif kind == "connection":
            conns[(name, fields.get("conn-name", "peer"))] = fields
        elif kind == "peer-device" and fields.get("volume", "0") == "0":
            peer_devs[(name, fields.get("conn-name", "peer"))] = fields
    out = []
    for name, res in resources.items():
        dev = devices.get(name, {})
        links = []
        for (rname, conn_name), conn in conns.items():
            if rname != name:
                continue
            pdev = peer_devs.get((rname, conn_name), {})
            peer = peers.get(name, conn_name) if conn_name == "peer" else conn_name
            links.append(
                DrbdPeerObs(
                    peer=peer,
                    connection=conn.get("connection", "Unknown"),
                    peer_role=conn.get("role", "Unknown"),
                    peer_disk=pdev.get("peer-disk", "DUnknown"),
                    replication=pdev.get("replication", "Off"),
                    percent_in_sync=_in_sync(pdev, dev),
                )
            )
        try:
            minor = int(dev["minor"]) if "minor" in dev else None
        except ValueError as exc:
            raise DrbdParseError("drbdsetup events2", f"{name}: minor {dev['minor']!r}") from exc
        out.append(
            DrbdResourceObs(
                name=name,
                role=res.get("role", "Unknown"),
                disk=dev.get("disk", "Diskless" if not dev else "DUnknown"),
                minor=minor,
                peers=tuple(sorted(links, key=lambda p: p.peer)),
            )
        )
    return tuple(sorted(out, key=lambda r: r.name))


def _in_sync(pdev: Mapping[str, str], dev: Mapping[str, str]) -> float:
    """Percent in sync: `done:` where the tool prints it (a resync under way), else
    from out-of-sync and the device size (both KiB, with --statistics); 100 when
    the output carries neither and nothing says a resync runs."""
    try:
        if "done" in pdev:
            return round(float(pdev["done"]), 1)
        if "out-of-sync" in pdev and "size" in dev and int(dev["size"]) > 0:
            oos, size = int(pdev["out-of-sync"]), int(dev["size"])
            return round(100.0 * max(0, size - oos) / size, 1)
    except ValueError as exc:
        raise DrbdParseError("drbdsetup events2", f"bad statistics: {exc}") from exc
    if pdev.get("replication", "").startswith(("Sync", "PausedSync")):
        return 0.0
    return 100.0
