"""Events and desired-state files for tests: `ev` builds a minimal event,
`cluster_yaml` a desired-state file for a lab, `THREE` its instances section with
three instances (web1, web2, db1).
"""

from __future__ import annotations

import time
import uuid

from events.ids import EventId, NodeName
from events.model import NodeFlagsSet
from tests.support.cluster.cluster_harness import Cluster

THREE = """  - name: web1
    memory: 512M
    vcpus: 1
    disks: [10G]
  - name: web2
    memory: 512M
    vcpus: 1
    disks: [10G]
  - name: db1
    memory: 1G
    vcpus: 2
    disks: [20G]
"""


def cluster_yaml(c: Cluster, instances: str) -> str:
    nodes = []
    for name, server in c.lab.servers.items():
        nodes.append(
            f"""  - name: {name}
    address: 127.0.0.1
    port: {server.port}
    memory: {server.host.memory_mib}M
    disk: {server.host.vg_size_mib}M
    cpus: {server.host.cpus}
    host_memory: 512M
    fence:
      agent: fence_corral_sim
      options: {{ip: 127.0.0.1, ipport: "{c.lab.control_port}", plug: {name}}}
"""
        )
    return f"""cluster:
  name: lab
  etcd: [{c.etcd.endpoint}]
  policy:
    n_plus_one: true
nodes:
{"".join(nodes)}instances:
{instances}"""


def ev(n: int, node: str = "n1") -> NodeFlagsSet:
    return NodeFlagsSet(
        id=EventId(f"e{n:05d}-{uuid.uuid4().hex[:6]}"),
        time=time.time(),
        actor="test",
        reason=f"event {n}",
        node=NodeName(node),
        drained=bool(n % 2),
    )
