"""An instance's cloud-init NoCloud seed, as the three texts the node helper's
`seed-write` puts in its `cidata` image: `meta-data` (instance-id, hostname, SSH
public keys), `user-data` (the desired-state file's, else an empty cloud-config)
and `network-config` (version 2: each NIC matched by its MAC, its fixed address
when it has one, else DHCP).

Pure: no I/O, no logging. Every text is JSON (which YAML reads as it is), so no
value can change the documents' structure.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from events.specs import InstanceSpec

EMPTY_USER_DATA = "#cloud-config\n{}\n"
IPV4_PREFIX = 24  # a NIC's `ip` carries no prefix: the seed gives it this one
IPV6_PREFIX = 64


def seed_texts(spec: InstanceSpec, *, instance_id: str) -> dict[str, str]:
    """{meta_data, user_data, network_config} for `seed-write`. `instance_id`
    changes only with a reinstall, so cloud-init's once-per-instance work runs
    once per install, not at every boot or failover."""
    keys = spec.cloud_init.ssh_keys if spec.cloud_init else ()
    meta: dict[str, Any] = {"instance-id": instance_id, "local-hostname": spec.name}
    if keys:
        meta["public-keys"] = list(keys)
    user_data = spec.cloud_init.user_data if spec.cloud_init else ""
    return {
        "meta_data": json.dumps(meta, indent=1) + "\n",
        "user_data": user_data or EMPTY_USER_DATA,
        "network_config": json.dumps(network_config(spec), indent=1) + "\n",
    }


def network_config(spec: InstanceSpec) -> dict[str, Any]:
    ethernets: dict[str, Any] = {}
    for i, nic in enumerate(spec.nics):
        if not nic.mac:
            continue  # not recorded yet: vm-start refuses such an instance anyway
        entry: dict[str, Any] = {"match": {"macaddress": nic.mac}, "set-name": f"eth{i}"}
        if nic.ip:
            ip = ipaddress.ip_address(nic.ip)
            prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
            entry["addresses"] = [f"{ip}/{prefix}"]
        else:
            entry["dhcp4"] = True
        ethernets[f"nic{i}"] = entry
    return {"version": 2, "ethernets": ethernets}
