"""A desired-state file for a lab started with `corral sim up`: its nodes (with
the lab's fence agent) and the given instances' lines."""

from __future__ import annotations

from typing import Any


def lab_cluster_yaml(inventory: dict[str, Any], *, instances: str = "") -> str:
    ipport = str(inventory["control_url"]).rsplit(":", 1)[1]
    nodes = "".join(
        f"""  - name: {n["name"]}
    address: 127.0.0.1
    port: {n["port"]}
    memory: {n["memory_mib"]}M
    disk: {n["disk_mib"]}M
    cpus: {n["cpus"]}
    fence:
      agent: fence_corral_sim
      options: {{ip: 127.0.0.1, ipport: "{ipport}", plug: {n["name"]}}}
"""
        for n in inventory["nodes"]
    )
    return f"cluster:\n  name: lab\nnodes:\n{nodes}instances:\n{instances}"
