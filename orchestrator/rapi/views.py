"""The folded cluster state in Ganeti RAPI v2 shapes: `/2/info`, bulk node,
instance and group objects (jobs: `orchestrator.rapi.job_views`), with Ganeti's field names,
units (MiB) and status words, so that Ganeti's RAPI client and htools' RAPI loader
(`hbal -m`, `hspace -m`) read a corral cluster as a Ganeti one.

Pure: no I/O, no logging, no clock (`now` is passed in).

Mapping choices (where Ganeti and corral differ):
- corral has no master node; htools need one, so the first node by name that is
  neither offline nor drained is reported as the master (role "M");
- an instance without a placement yet does not exist for Ganeti (its creation job
  is still running), so it is left out of the instance resources;
- corral's transient words map to Ganeti's: `building`/`starting` -> ERROR_down
  (should run, does not yet); a node that is LOST or FENCED is reported `offline`;
- `disk_usage` is the sum of the disk sizes (corral keeps DRBD metadata inside
  the LV), matching the disk numbers of `dtotal`/`dfree`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from events.ids import InstanceName, NodeName
from events.model import instance_key, node_key
from events.specs import InstanceSpec, PowerState
from events.state import ClusterState
from orchestrator.cluster_report import instance_row
from orchestrator.incremental import PerInstance
from orchestrator.roles import Principal, sees_instance
from reactors.htools.model import BCluster, BPolicy, ISpec, from_state, group_uuid
from reactors.plans.queries import vm_alive, vm_on
from reactors.plans.steps import effective_hv

_NAMESPACE = uuid.UUID("0b9e3c1a-4f7d-4c1e-8a6b-5d2e7f9a1c33")
GANETI_STATUSES = frozenset(
    {
        "running",
        "ADMIN_down",
        "ADMIN_offline",
        "ERROR_up",
        "ERROR_down",
        "ERROR_wrongnode",
        "ERROR_nodedown",
        "ERROR_nodeoffline",
        "USER_down",
    }
)
DISK_TEMPLATE = "drbd"
HYPERVISOR = "kvm"
SOFTWARE_VERSION = "2.16.0"  # the RAPI feature level served (Ganeti 2.16 / 3.0)


def object_uuid(kind: str, name: str) -> str:
    """A stable UUID per object (corral names objects; Ganeti wants UUIDs)."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}/{name}"))


# --------------------------------------------------------------------------- cluster


def master_node(state: ClusterState) -> str | None:
    for name in sorted(state.desired.nodes):
        spec = state.desired.nodes[name]
        if not spec.offline and not spec.drained and not state.node_down(name):
            return name
    return min(state.desired.nodes, default=None)


def _ispec(spec: ISpec) -> dict[str, int]:
    mem, cpus, disk, disks, nics, spindles = spec
    return {
        "memory-size": mem,
        "cpu-count": cpus,
        "disk-size": disk,
        "disk-count": disks,
        "nic-count": nics,
        "spindle-use": spindles,
    }


def ipolicy(policy: BPolicy) -> dict[str, Any]:
    return {
        "minmax": [{"min": _ispec(lo), "max": _ispec(hi)} for lo, hi in policy.min_max],
        "std": _ispec(policy.std_spec),
        "disk-templates": list(policy.disk_templates),
        "vcpu-ratio": policy.vcpu_ratio,
        "spindle-ratio": policy.spindle_ratio,
    }


def _ndparams() -> dict[str, Any]:
    return {"exclusive_storage": False, "spindle_count": 1, "oob_program": None}


def cluster_tags(bc: BCluster) -> list[str]:
    return list(bc.cluster_tags)


def info(state: ClusterState, *, bc: BCluster) -> dict[str, Any]:
    """`GET /2/info` (Ganeti's QueryClusterInfo): what htools read (master, tags,
    ipolicy, default_hypervisor) plus the common descriptive fields."""
    name = state.desired.name
    return {
        "name": name,
        "uuid": object_uuid("cluster", name),
        "master": master_node(state),
        "software_version": SOFTWARE_VERSION,
        "protocol_version": 2160000,
        "config_version": 2160000,
        "os_api_version": 20,
        "export_version": 0,
        "vcs_version": "corral",
        "architecture": ["64bit", "x86_64"],
        "default_hypervisor": HYPERVISOR,
        "enabled_hypervisors": [HYPERVISOR],
        "enabled_disk_templates": [DISK_TEMPLATE],
        "hvparams": {HYPERVISOR: state.desired.policy.hv.given()},
        "os_hvp": {},
        "beparams": {"default": _beparams_defaults()},
        "osparams": {},
        "nicparams": {"default": {"mode": "bridged", "link": "br0", "vlan": ""}},
        "ndparams": _ndparams(),
        "diskparams": {DISK_TEMPLATE: {}},
        "ipolicy": ipolicy(bc.policy),
        "candidate_pool_size": 10,
        "master_netdev": "",
        "master_netmask": 32,
        "use_external_mip_script": False,
        "volume_group_name": "corral",
        "mac_prefix": state.desired.policy.mac_prefix,
        "drbd_usermode_helper": "/bin/true",
        "file_storage_dir": "",
        "shared_file_storage_dir": "",
        "maintain_node_health": True,
        "default_iallocator": "hail",
        "default_iallocator_params": {},
        "reserved_lvs": [],
        "primary_ip_version": 4,
        "prealloc_wipe_disks": False,
        "hidden_os": [],
        "blacklisted_os": [],
        "uid_pool": [],
        "tags": cluster_tags(bc),
        "ctime": None,
        "mtime": None,
    }


def _beparams_defaults() -> dict[str, Any]:
    return {
        "maxmem": 128,
        "minmem": 128,
        "memory": 128,
        "vcpus": 1,
        "auto_balance": True,
        "always_failover": False,
        "spindle_use": 1,
    }


# --------------------------------------------------------------------------- instances


def listed_instances(state: ClusterState, principal: Principal) -> list[InstanceName]:
    """The instances Ganeti would know (placed on declared nodes) that
    `principal` may see, by name."""
    out = []
    for name in sorted(state.desired.instances):
        spec = state.desired.instances[name]
        p = state.placements.get(name)
        if p is None or p.primary not in state.desired.nodes:
            continue
        if sees_instance(principal, tags=spec.tags):
            out.append(name)
    return out


def ganeti_status(state: ClusterState, name: InstanceName, *, now: float) -> str:
    status = instance_row(state, name, now=now).status
    if status in GANETI_STATUSES:
        return status
    spec = state.desired.instances[name]
    return "ERROR_down" if spec.power is PowerState.RUNNING else "ADMIN_down"


def beparams(spec: InstanceSpec) -> dict[str, Any]:
    return {
        "maxmem": spec.memory_mib,
        "minmem": spec.memory_mib,
        "memory": spec.memory_mib,
        "vcpus": spec.vcpus,
        "auto_balance": spec.auto_balance,
        "always_failover": False,
        "spindle_use": 1,
    }


def instance(state: ClusterState, name: InstanceName, *, now: float) -> dict[str, Any]:
    """One bulk instance object (Ganeti's I_FIELDS plus what htools read)."""
    spec = state.desired.instances[name]
    placement = state.placements[name]
    vm = vm_on(state.observed.get(placement.primary), name)
    running = vm_alive(vm)
    nics = spec.nics
    return {
        "name": name,
        "uuid": object_uuid("instance", name),
        "os": spec.os,
        "admin_state": "up" if spec.power is PowerState.RUNNING else "down",
        "admin_state_source": "admin",
        "oper_state": running,
        "oper_ram": ((vm.memory_mib or spec.memory_mib) if vm is not None and running else None),
        "oper_vcpus": ((vm.vcpus or spec.vcpus) if vm is not None and running else None),
        "status": ganeti_status(state, name, now=now),
        "pnode": placement.primary,
        "snodes": [placement.secondary],
        "pnode.group.uuid": group_uuid(name=_group_of(state, placement.primary)),
        "disk_template": DISK_TEMPLATE,
        "disk.sizes": [d.size_mib for d in spec.disks],
        "disk.spindles": [None for _ in spec.disks],
        "disk.count": len(spec.disks),
        "disk_usage": spec.disk_mib,
        "nic.count": len(nics),
        "nic.macs": [n.mac for n in nics],
        "nic.ips": [n.ip for n in nics],
        "nic.modes": [n.mode for n in nics],
        "nic.links": [n.link for n in nics],
        "nic.bridges": [n.link if n.mode == "bridged" else None for n in nics],
        "nic.networks": [None for _ in nics],
        "network_port": None,
        "hypervisor": HYPERVISOR,
        "beparams": beparams(spec),
        "hvparams": effective_hv(state=state, spec=spec, node=placement.primary).hv.given(),
        "custom_beparams": {},
        "custom_hvparams": spec.hv.given(),
        "custom_nicparams": [{} for _ in nics],
        "forthcoming": False,
        "tags": sorted(spec.tags),
        "ctime": None,
        "mtime": None,
        "serial_no": state.versions.get(instance_key(name), 0),
    }


_BULK = PerInstance(
    lambda state, name, now: json.dumps(instance(state, name, now=now)), versions=True
)


def instances_json(state: ClusterState, names: Iterable[InstanceName], *, now: float) -> str:
    """`/2/instances?bulk=1` as JSON text, each instance's object kept until the
    instance changes."""
    return "[" + ", ".join(_BULK.many(state, names, now=now)) + "]"


def instance_info(state: ClusterState, name: InstanceName, *, now: float) -> dict[str, Any]:
    """`/2/instances/NAME/info`'s job result entry (Ganeti's OpInstanceQueryData)."""
    base = instance(state, name, now=now)
    placement = state.placements[name]
    return {
        "name": name,
        "uuid": base["uuid"],
        "config_state": base["admin_state"],
        "run_state": "up" if base["oper_state"] else "down",
        "pnode": placement.primary,
        "snodes": [placement.secondary],
        "os": base["os"],
        "hypervisor": HYPERVISOR,
        "disk_template": DISK_TEMPLATE,
        "network_port": None,
        "be_instance": {},
        "be_actual": base["beparams"],
        "hv_instance": {},
        "hv_actual": {},
        "os_instance": {},
        "os_actual": {},
        "nics": [
            (n.ip, n.mac, n.mode, n.link, None, None, None)
            for n in state.desired.instances[name].nics
        ],
        "disks": [
            {
                "iv_name": f"disk/{d.index}",
                "dev_type": DISK_TEMPLATE,
                "size": d.size_mib,
                "mode": "rw",
                "logical_id": [placement.primary, placement.secondary, d.port, d.minor, d.minor],
                "pstatus": None,
                "sstatus": None,
                "children": [],
            }
            for d in placement.disks
        ],
        "tags": base["tags"],
        "ctime": None,
        "mtime": None,
    }


# --------------------------------------------------------------------------- nodes


def _group_of(state: ClusterState, node: str) -> str:
    spec = state.desired.nodes.get(NodeName(node))
    return spec.group if spec is not None else "default"


def node_role(state: ClusterState, name: NodeName) -> str:
    """Ganeti's one-letter role: M(aster), C(andidate), R(egular), D(rained), O(ffline)."""
    spec = state.desired.nodes[name]
    if spec.offline or state.node_down(name):
        return "O"
    if spec.drained:
        return "D"
    return "M" if master_node(state) == name else "R"


ROLE_WORDS = {
    "M": "master",
    "C": "master-candidate",
    "R": "regular",
    "D": "drained",
    "O": "offline",
}


def node(
    state: ClusterState,
    name: NodeName,
    *,
    bc: BCluster,
    visible: Sequence[InstanceName] | None = None,
) -> dict[str, Any]:
    """One bulk node object (Ganeti's N_FIELDS plus what htools read). With
    `visible`, instance lists and counts name only those instances."""
    spec = state.desired.nodes[name]
    bnode = bc.node(name)
    seen = None if visible is None else set(visible)
    primaries = sorted(
        n
        for n, p in state.placements.items()
        if p.primary == name and n in state.desired.instances and (seen is None or n in seen)
    )
    secondaries = sorted(
        n
        for n, p in state.placements.items()
        if p.secondary == name and n in state.desired.instances and (seen is None or n in seen)
    )
    role = node_role(state, name)
    return {
        "name": name,
        "uuid": object_uuid("node", name),
        "offline": role == "O",
        "drained": spec.drained,
        "master_candidate": role == "M",
        "master_capable": True,
        "vm_capable": True,
        "role": role,
        "mtotal": bnode.t_mem,
        "mnode": bnode.n_mem,
        "mfree": bnode.f_mem,
        "dtotal": bnode.t_dsk,
        "dfree": bnode.f_dsk,
        "ctotal": bnode.t_cpu,
        "cnos": bnode.os_cpus,
        "cnodes": 1,
        "csockets": 1,
        "sptotal": bnode.spindles,
        "spfree": bnode.free_spindles,
        "pip": spec.address,
        "sip": spec.drbd_address,
        "pinst_cnt": len(primaries),
        "sinst_cnt": len(secondaries),
        "pinst_list": primaries,
        "sinst_list": secondaries,
        "ndparams": _ndparams(),
        "group": spec.group,
        "group.uuid": group_uuid(name=spec.group),
        "tags": sorted(spec.tags),
        "ctime": None,
        "mtime": None,
        "serial_no": state.versions.get(node_key(name), 0),
    }


def groups(state: ClusterState, *, bc: BCluster) -> list[dict[str, Any]]:
    out = []
    for g in bc.groups:
        members = sorted(n.name for n in bc.nodes if n.group == g.name)
        out.append(
            {
                "name": g.name,
                "uuid": g.uuid,
                "alloc_policy": g.alloc_policy,
                "node_cnt": len(members),
                "node_list": members,
                "ipolicy": ipolicy(g.policy or bc.policy),
                "custom_ipolicy": {},
                "diskparams": {DISK_TEMPLATE: {}},
                "custom_diskparams": {},
                "ndparams": _ndparams(),
                "custom_ndparams": {},
                "networks": [],
                "tags": list(g.tags),
                "ctime": None,
                "mtime": None,
                "serial_no": 0,
            }
        )
    return out


def htools_view(state: ClusterState) -> BCluster:
    return from_state(state=state)
