"""An instance's cloud-init NoCloud seed, as the three texts the node helper's
`seed-write` puts in its `cidata` image: `meta-data` (instance-id, hostname, SSH
public keys), `user-data` (the desired-state file's, else an empty cloud-config)
and `network-config` (version 2: each NIC matched by its MAC, its fixed address
with its prefix length when it has one, else DHCP; its gateway as the default
route and its DNS servers when given).

Pure: no I/O, no logging. Every text is JSON (which YAML reads as it is), so no
value can change the documents' structure.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from events.fields.network import default_prefix
from events.specs import InstanceSpec, NicSpec

EMPTY_USER_DATA = "#cloud-config\n{}\n"


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
        entry.update(_addressing(nic))
        ethernets[f"nic{i}"] = entry
    return {"version": 2, "ethernets": ethernets}


def _addressing(nic: NicSpec) -> dict[str, Any]:
    """A NIC's addresses, default route and DNS servers in netplan's v2 words."""
    out: dict[str, Any] = {}
    if nic.ip:
        ip = ipaddress.ip_address(nic.ip)
        out["addresses"] = [f"{ip}/{nic.prefix_len or default_prefix(ip)}"]
        if nic.gateway:
            # gateway4/6, not `routes: [{to: default ...}]`: the cloud-init of Debian 12
            # (22.4) refuses `to: default` and reads `to: ::/0` as a /64; netplan still
            # takes gateway4/6 (deprecated there, not refused).
            out[f"gateway{ip.version}"] = nic.gateway
    else:
        out["dhcp4"] = True
    if nic.nameservers:
        out["nameservers"] = {"addresses": list(nic.nameservers)}
    return out
