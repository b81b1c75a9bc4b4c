"""MAC addresses for NICs that do not set one: generated once, from the cluster's
prefix (the policy's `mac_prefix`, Ganeti's default `aa:00:00`), unique in the
cluster, and then recorded with the instance's spec in its InstanceDeclared/
InstanceUpdated event, so a failover, a migration or a later apply of the same
file keeps it (a NIC without `mac` in the file keeps the MAC its position already
has; a changed prefix applies only to MACs handed out afterwards).

Pure: no I/O, no logging. Generation is deterministic (a hash of the instance
name, the NIC's position and a counter), so `corral plan` and `corral apply`
show and record the same MACs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace

from events.fields.network import DEFAULT_MAC_PREFIX
from events.ids import InstanceName
from events.specs import DesiredCluster, InstanceSpec


def used_macs(instances: Mapping[InstanceName, InstanceSpec]) -> set[str]:
    return {nic.mac for spec in instances.values() for nic in spec.nics if nic.mac}


def _generate(name: str, index: int, taken: set[str], prefix: str) -> str:
    for attempt in range(1 << 16):
        digest = hashlib.sha256(f"{name}/{index}/{attempt}".encode()).digest()
        mac = prefix + "".join(f":{b:02x}" for b in digest[:3])
        if mac not in taken:
            return mac
    raise ValueError(f"no free MAC address left under prefix {prefix}")


def with_macs(
    spec: InstanceSpec,
    *,
    taken: set[str],
    live: InstanceSpec | None = None,
    prefix: str = DEFAULT_MAC_PREFIX,
) -> InstanceSpec:
    """`spec` with a MAC on every NIC: its own, else the live NIC's at the same
    position, else a new one not in `taken` (which grows by what is handed out)."""
    if all(nic.mac for nic in spec.nics):
        return spec
    nics = []
    for i, nic in enumerate(spec.nics):
        mac = nic.mac
        if not mac and live is not None and i < len(live.nics):
            mac = live.nics[i].mac
        if not mac:
            mac = _generate(spec.name, i, taken, prefix)
        taken.add(mac)
        nics.append(replace(nic, mac=mac))
    return replace(spec, nics=tuple(nics))


def cluster_with_macs(*, wanted: DesiredCluster, live: DesiredCluster) -> DesiredCluster:
    """Every NIC of the file's instances with its MAC (see `with_macs`), new ones
    under the file's `mac_prefix`."""
    taken = used_macs(wanted.instances) | used_macs(live.instances)
    if all(nic.mac for spec in wanted.instances.values() for nic in spec.nics):
        return wanted
    instances = {
        name: with_macs(
            spec, taken=taken, live=live.instances.get(name), prefix=wanted.policy.mac_prefix
        )
        for name, spec in sorted(wanted.instances.items())
    }
    return replace(wanted, instances=instances)
