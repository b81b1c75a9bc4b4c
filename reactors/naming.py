"""How corral names what it creates on nodes, and how it hands out DRBD minors and
ports without collisions.

Pure: no I/O, no logging.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

from events.ids import InstanceName, NodeName
from events.model import DiskPlacement
from events.specs import DiskSpec
from events.state import ClusterState, NodeObservation

MINOR_BASE = 0
MINOR_LIMIT = 1 << 20  # DRBD allows minors up to 2^20 - 1
PORT_BASE = 11000
PORT_LIMIT = 29999

_DISK_RE = re.compile(r"^(?P<instance>[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?)-d(?P<index>\d+)$")


def disk_name(instance: str, index: int) -> str:
    """The LV name and the DRBD resource name of one instance disk."""
    return f"{instance}-d{index}"


@functools.lru_cache(maxsize=1 << 16)
def parse_disk_name(name: str) -> tuple[InstanceName, int] | None:
    """Inverse of `disk_name`; None for anything corral did not create. Cached: a
    node's every report names the same disks again."""
    m = _DISK_RE.fullmatch(name)
    if not m:
        return None
    return InstanceName(m.group("instance")), int(m.group("index"))


# An observation is immutable (a new probe replaces it), so which corral disks it
# holds is worked out once per observation, not once per instance planned: with
# 1,000 instances on 40 nodes that scan was most of a reconcile pass. Keyed by
# identity; the observation is kept with its entry so an id is never reused.
_DISKS_SEEN: dict[int, tuple[NodeObservation, dict[InstanceName, tuple[str, ...]]]] = {}
_DISKS_SEEN_MAX = 4096


def disks_by_instance(obs: NodeObservation) -> Mapping[InstanceName, tuple[str, ...]]:
    """The LV and DRBD resource names corral created on this node, per instance
    (sorted; metadata LVs and foreign names left out)."""
    hit = _DISKS_SEEN.get(id(obs))
    if hit is not None and hit[0] is obs:
        return hit[1]
    found: dict[InstanceName, set[str]] = {}
    for name in chain((v.name for v in obs.volumes), (r.name for r in obs.drbd)):
        parsed = parse_disk_name(name)
        if parsed is not None:
            found.setdefault(parsed[0], set()).add(name)
    index = {inst: tuple(sorted(names)) for inst, names in found.items()}
    if len(_DISKS_SEEN) >= _DISKS_SEEN_MAX:
        _DISKS_SEEN.clear()
    _DISKS_SEEN[id(obs)] = (obs, index)
    return index


VNC_BASE_PORT = 5900
VNC_DISPLAY_MAX = 65535 - VNC_BASE_PORT


def vnc_display(first_minor: int) -> int | None:
    """An instance's VNC display on its node's loopback (port 5900 + display): its
    first disk's DRBD minor (unique on the node, and the same on both nodes of the
    pair, so a migration keeps it); none when that minor is beyond VNC's ports."""
    return first_minor if 0 <= first_minor <= VNC_DISPLAY_MAX else None


def run_dir() -> str:
    return "/run/corral"


def used_minors_and_ports(
    state: ClusterState, *, exclude: InstanceName | None = None
) -> tuple[dict[NodeName, set[int]], set[int]]:
    """Minors in use per node and ports in use cluster-wide, from placements and
    from what nodes report (so a leftover resource is never collided with)."""
    minors: dict[NodeName, set[int]] = {}
    ports: set[int] = set()
    for name, placement in state.placements.items():
        if name == exclude:
            continue
        for disk in placement.disks:
            for node in (placement.primary, placement.secondary):
                minors.setdefault(node, set()).add(disk.minor)
            ports.add(disk.port)
    for node, obs in state.observed.items():
        for res in obs.drbd:
            parsed = parse_disk_name(res.name)
            if parsed and parsed[0] == exclude:
                continue
            if res.minor is not None:
                minors.setdefault(node, set()).add(res.minor)
    return minors, ports


def new_disks(*, state: ClusterState, disks: Sequence[DiskSpec]) -> tuple[DiskPlacement, ...]:
    """Placements of `disks` with (minor, port) pairs unique cluster-wide: an
    instance keeps its minors and ports when its secondary moves or it fails over,
    so a running primary never has to change device. Raises ValueError when the
    ranges are exhausted."""
    return DiskNumbers.of(state).take(disks)


@dataclass
class DiskNumbers:
    """DRBD minors and ports in use, handed out lowest first: `take` never hands
    out a number in use or one it handed out before. Mutable working state of one
    placement pass (several instances placed before the state folds them in)."""

    minors: set[int]
    ports: set[int]
    _minor: int = MINOR_BASE
    _port: int = PORT_BASE

    @staticmethod
    def of(state: ClusterState) -> DiskNumbers:
        per_node, ports = used_minors_and_ports(state)
        return DiskNumbers(minors=set().union(*per_node.values()), ports=ports)

    def see(self, state: ClusterState) -> None:
        """Keep off the minors the nodes report now too (a leftover resource shows
        up with a probe)."""
        for obs in state.observed.values():
            self.minors.update(r.minor for r in obs.drbd if r.minor is not None)

    def take(self, disks: Sequence[DiskSpec]) -> tuple[DiskPlacement, ...]:
        placed: list[DiskPlacement] = []
        for index, disk in enumerate(disks):
            # The numbers only ever grow more taken: the search goes on from the
            # last number handed out.
            while self._minor in self.minors:
                self._minor += 1
            while self._port in self.ports:
                self._port += 1
            if self._minor >= MINOR_LIMIT or self._port > PORT_LIMIT:
                raise ValueError("no free DRBD minor or port left")
            placed.append(
                DiskPlacement(
                    index=index, size_mib=disk.size_mib, minor=self._minor, port=self._port
                )
            )
            self.minors.add(self._minor)
            self.ports.add(self._port)
        return tuple(placed)
