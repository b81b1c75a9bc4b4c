"""Runners of the reference tools from Debian's ganeti-htools-3.0 (`hbal`,
`hinfo`, `hail`) and the parsing of their output, for parity tests and benches.
Must not decide anything: it reports what the tools said.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.ids import InstanceName, NodeName
from events.specs import (
    InstanceSpec,
)
from events.state import ClusterState
from reactors.htools.model import (
    DEFAULT_SPINDLE_RATIO,
    BCluster,
    from_state,
    group_uuid,
)
from reactors.htools.text import parse
from tests.support.tools import require_tool

HAIL = "/usr/lib/ganeti/3.0/usr/lib/ganeti/iallocators/hail"


def _ispec(**values: int) -> dict[str, int]:
    return {k.replace("_", "-"): v for k, v in values.items()}


def ipolicy(*, vcpu_ratio: float) -> dict[str, Any]:
    """An instance policy wide enough that no request here is out of spec; the
    vcpu and spindle ratios are the ones corral's model scores with."""
    std = _ispec(
        memory_size=128, cpu_count=1, disk_size=1024, disk_count=1, nic_count=1, spindle_use=1
    )
    return {
        "std": std,
        "minmax": [
            {
                "min": _ispec(
                    memory_size=128,
                    cpu_count=1,
                    disk_size=1,
                    disk_count=1,
                    nic_count=0,
                    spindle_use=0,
                ),
                "max": _ispec(
                    memory_size=1_048_576,
                    cpu_count=64,
                    disk_size=16_777_216,
                    disk_count=16,
                    nic_count=8,
                    spindle_use=12,
                ),
            }
        ],
        "vcpu-ratio": vcpu_ratio,
        "spindle-ratio": DEFAULT_SPINDLE_RATIO,
        "disk-templates": ["drbd", "plain"],
    }


def _disks(spec: InstanceSpec) -> list[dict[str, Any]]:
    return [{"size": d.size_mib, "mode": "rw", "spindles": 1} for d in spec.disks]


def _nics(spec: InstanceSpec) -> list[dict[str, Any]]:
    return [
        {"mac": n.mac, "ip": n.ip, "mode": n.mode, "link": n.link, "bridge": n.link}
        for n in spec.nics
    ] or [{"mac": None, "ip": None, "mode": "bridged", "link": "br0", "bridge": "br0"}]


def iallocator_request(
    state: ClusterState, spec: InstanceSpec, *, spindle_count: int | None = None
) -> dict[str, Any]:
    """The IAllocator allocate message Ganeti would send hail for `spec` on the
    cluster `state` describes (the same model `reactors.htools.model.from_state` builds).
    `spindle_count` overrides every node's spindles (the model's 1)."""
    cluster = from_state(state=state)
    desired = state.desired
    policy = ipolicy(vcpu_ratio=desired.policy.vcpu_ratio)
    groups = {
        g.uuid: {
            "name": g.name,
            "alloc_policy": g.alloc_policy,
            "networks": [],
            "tags": list(g.tags),
            "ipolicy": policy,
        }
        for g in cluster.groups
    }
    pri_mem: Counter[str] = Counter()
    pri_up: Counter[str] = Counter()
    for inst in cluster.instances:
        pri_mem[inst.pnode] += inst.mem
        if inst.running:
            pri_up[inst.pnode] += inst.mem
    nodes = {
        n.name: {
            "total_memory": n.t_mem,
            "reserved_memory": n.n_mem,
            "free_memory": n.f_mem,
            "i_pri_memory": pri_mem[n.name],
            "i_pri_up_memory": pri_up[n.name],
            "total_disk": n.t_dsk,
            "free_disk": n.f_dsk,
            "total_cpus": n.t_cpu,
            "reserved_cpus": n.os_cpus,
            "total_spindles": spindle_count or n.spindles,
            "free_spindles": spindle_count or n.spindles,
            "offline": n.offline,
            "drained": n.drained,
            "master_candidate": True,
            "master_capable": True,
            "vm_capable": True,
            "group": group_uuid(name=n.group),
            "tags": list(n.tags),
            "primary_ip": desired.nodes[NodeName(n.name)].address,
            "secondary_ip": desired.nodes[NodeName(n.name)].drbd_address,
            "ndparams": {
                "spindle_count": spindle_count or n.spindles,
                "exclusive_storage": False,
                "oob_program": None,
            },
        }
        for n in cluster.nodes
    }
    instances = {}
    for inst in cluster.instances:
        ispec = desired.instances[InstanceName(inst.name)]
        instances[inst.name] = _instance_doc(ispec) | {
            "admin_state": "up" if inst.running else "down",
            "nodes": [inst.pnode, inst.snode],
        }
    request = _instance_doc(spec) | {
        "type": "allocate",
        "name": spec.name,
        "required_nodes": 2,
    }
    return {
        "version": 2,
        "cluster_name": desired.name or "corral",
        "cluster_tags": list(cluster.cluster_tags),
        "enabled_hypervisors": ["kvm"],
        "ipolicy": policy,
        "nodegroups": groups,
        "nodes": nodes,
        "instances": instances,
        "request": request,
    }


def _instance_doc(spec: InstanceSpec) -> dict[str, Any]:
    return {
        "memory": spec.memory_mib,
        "vcpus": spec.vcpus,
        "disks": _disks(spec),
        "disk_space_total": spec.disk_mib,
        "disk_template": "drbd",
        "tags": sorted(spec.tags),
        "os": spec.os,
        "nics": _nics(spec),
        "spindle_use": 1,
        "hypervisor": "kvm",
        "admin_state_source": "admin",
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class HailAnswer:
    success: bool
    primary: NodeName | None = None
    secondary: NodeName | None = None
    info: str = ""


def run_hail(
    *, hail: str, message: dict[str, Any], path: Path, capacity: bool = True
) -> HailAnswer:
    """One hail run on `message`, written to `path` (hail reads a file). Without
    `capacity`, hail skips its global N+1 check (every node's primaries can fail
    over to their secondaries, memory, vCPU ratio and exclusion tags included)."""
    path.write_text(json.dumps(message))
    extra = [] if capacity else ["--no-capacity-checks"]
    done = subprocess.run(
        [hail, "--static-kvm-node-memory=0", *extra, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    if not answer["success"]:
        return HailAnswer(success=False, info=answer["info"])
    p, s = answer["result"]
    return HailAnswer(success=True, primary=NodeName(p), secondary=NodeName(s), info=answer["info"])


_ROW = re.compile(r"^\s+([a-z0-9_]+)\s+(-?[0-9.]+|NaN|-?Infinity)\s+x([0-9.]+)\s*$")


def hinfo_components(*, path: Path) -> tuple[dict[str, tuple[float, float]], float]:
    hinfo = require_tool(f"{HTOOLS_BIN}/hinfo", PACKAGE)
    out = subprocess.run(
        [hinfo, "-t", str(path), "-v", "-v", "-v"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    section = out.split("Cluster coefficients:", 1)[1]
    rows: dict[str, tuple[float, float]] = {}
    for line in section.splitlines():
        m = _ROW.match(line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    total = re.search(r"^Cluster score: (\S+)$", out, re.MULTILINE)
    assert total is not None, out
    return rows, float(total.group(1))


def hbal_initial(*, path: Path) -> tuple[float, int]:
    """hbal's initial score and its count of bad (N+1-failing) nodes."""
    hbal = require_tool(f"{HTOOLS_BIN}/hbal", PACKAGE)
    out = subprocess.run(
        [hbal, "-t", str(path), "-v", "-l", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    initial = re.search(r"Initial score: (\S+)", out)
    bad = re.search(r"Initial check done: (\d+) bad nodes", out)
    assert initial is not None and bad is not None, out
    return float(initial.group(1)), int(bad.group(1))


HTOOLS_BIN = "/usr/lib/ganeti/3.0/usr/bin"


PACKAGE = "ganeti-htools-3.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class HbalResult:
    moves: int
    initial: float
    final: float
    seconds: float
    balanced: BCluster | None
    finished: bool
    migrations: int = 0  # the failovers ("f") in its moves' actions


# "  12. inst  pnode:snode => pnode:snode  score a=f r:node" (names padded)
_MOVE = re.compile(r"^\s*\d+\. \S+\s+\S+ => \S+\s", re.MULTILINE)


_ACTION = re.compile(r"^\s*\d+\. \S+\s+\S+ => \S+\s+\S+ a=(.*)$", re.MULTILINE)


def run_hbal(*, path: Path, timeout: float = 600.0) -> HbalResult:
    """`hbal -t FILE -S OUT`: its move count, scores, time and saved final state."""
    hbal = require_tool(f"{HTOOLS_BIN}/hbal", PACKAGE)
    out_base = path.with_suffix(".hbal")
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [hbal, "-t", str(path), "-S", str(out_base), "-C"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return HbalResult(
            moves=0,
            initial=float("nan"),
            final=float("nan"),
            seconds=time.perf_counter() - started,
            balanced=None,
            finished=False,
        )
    took = time.perf_counter() - started
    text = proc.stdout
    initial = re.search(r"Initial score: (\S+)", text)
    assert initial is not None, text
    improved = re.search(r"Cluster score improved from \S+ to (\S+)", text)
    final = float(improved.group(1)) if improved else float(initial.group(1))
    balanced_path = Path(f"{out_base}.balanced")
    balanced = parse(balanced_path.read_text()) if balanced_path.exists() else None
    return HbalResult(
        moves=len(_MOVE.findall(text)),
        migrations=sum(a.split().count("f") for a in _ACTION.findall(text)),
        initial=float(initial.group(1)),
        final=final,
        seconds=took,
        balanced=balanced,
        finished=True,
    )


def hinfo_score(*, path: Path) -> tuple[float, int]:
    """htools' own score of a file and its count of N+1-failing nodes."""
    hinfo = require_tool(f"{HTOOLS_BIN}/hinfo", PACKAGE)
    out = subprocess.run(
        [hinfo, "-t", str(path), "-v", "-v"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    total = re.search(r"^Cluster score: (\S+)$", out, re.MULTILINE)
    bad = re.search(r"(\d+) N\+1 failures|N\+1 failures: (\d+)|bad nodes: (\d+)", out)
    assert total is not None, out
    count = 0
    if bad is not None:
        count = int(next(g for g in bad.groups() if g is not None))
    return float(total.group(1)), count
