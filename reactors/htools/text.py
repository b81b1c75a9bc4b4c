"""Ganeti htools' text backend (`hbal -t FILE`, `hinfo -t FILE`, `hspace -t FILE`):
`render` writes a `BCluster` in that format, `parse` reads it back.

Pure: no I/O, no logging; callers write and read the files.

The format: five sections separated by exactly one empty line, fields by `|`,
lists by `,`, sizes in MiB.
  1. groups:    name|uuid|alloc_policy|tags|networks
  2. nodes:     name|t_mem|n_mem|f_mem|t_dsk|f_dsk|t_cpu|role|group_uuid|spindles|
                tags|exclusive_storage|free_spindles|os_cpus|cpu_speed
                (role Y offline, M master, N other; trailing columns optional)
  3. instances: name|mem|dsk|vcpus|status|auto_balance|pnode|snode|disk_template|
                tags|spindle_use|disk_spindles|forthcoming
  4. cluster tags, one per line
  5. policies:  owner|std_spec|min;max[;min;max...]|disk_templates|vcpu_ratio|
                spindle_ratio   (owner empty for the cluster, else a group name)

What the format cannot say: a drained node. htools' own loaders read a drained
node as offline (`offline || drained`), so `render` writes drained nodes with role
Y and `parse` returns them as offline. Any role other than Y (offline) and M
(master) is an ordinary online node, as htools read it.

`parse` takes what htools' text loader takes (numbers as Haskell reads them,
`reactors.htools.numbers`; a node with `?` resources as an empty offline node;
extra sections after the fifth ignored) and refuses the rest with the line
named. Beyond htools it refuses duplicate names and non-finite numbers, which
htools would read ambiguously. `render` writes every field back so that htools
read the same values (totals as exact Doubles).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from reactors.htools.model import (
    DISK_TEMPLATES,
    STATUSES,
    BCluster,
    BGroup,
    BInstance,
    BNode,
    BPolicy,
    ISpec,
    group_uuid,
)
from reactors.htools.numbers import read_double, read_int, show_double

_ALLOC_POLICIES = frozenset({"preferred", "last_resort", "unallocable"})

_T = TypeVar("_T")


# --------------------------------------------------------------------------- render


def _field(*, value: str, what: str) -> str:
    for bad in ("|", "\n", "\r"):
        if bad in value:
            raise ValueError(
                f"{what} {value!r} contains {bad!r}, which the text format cannot hold"
            )
    return value


def _list(*, values: tuple[str, ...], what: str) -> str:
    for v in values:
        if "," in v or v == "":
            raise ValueError(f"{what} {v!r} cannot be written as a list item")
        _field(value=v, what=what)
    return ",".join(values)


def _spec(spec: ISpec) -> str:
    return ",".join(str(v) for v in spec)


def _policy_line(*, owner: str, policy: BPolicy) -> str:
    minmax = ";".join(f"{_spec(lo)};{_spec(hi)}" for lo, hi in policy.min_max)
    return "|".join(
        [
            owner,
            _spec(policy.std_spec),
            minmax,
            ",".join(policy.disk_templates),
            repr(float(policy.vcpu_ratio)),
            repr(float(policy.spindle_ratio)),
        ]
    )


def all_groups(*, cluster: BCluster) -> tuple[BGroup, ...]:
    """The cluster's groups plus one (default policy) for every group a node names
    that the cluster does not list."""
    known = {g.name for g in cluster.groups}
    extra = sorted({n.group for n in cluster.nodes} - known)
    return cluster.groups + tuple(BGroup(name=g, uuid=group_uuid(name=g)) for g in extra)


def _node_line(*, node: BNode, uuid: str) -> str:
    role = "Y" if node.htools_offline else ("M" if node.master else "N")
    return "|".join(
        [
            _field(value=node.name, what="node name"),
            show_double(float(node.t_mem)),
            str(node.n_mem),
            str(node.f_mem),
            show_double(float(node.t_dsk)),
            str(node.f_dsk),
            show_double(float(node.t_cpu)),
            role,
            uuid,
            str(node.spindles),
            _list(values=node.tags, what="node tag"),
            "Y" if node.exclusive_storage else "N",
            str(node.free_spindles),
            str(node.os_cpus),
            f"{node.cpu_speed:f}",
        ]
    )


def _instance_line(inst: BInstance) -> str:
    return "|".join(
        [
            _field(value=inst.name, what="instance name"),
            str(inst.mem),
            str(inst.dsk),
            str(inst.vcpus),
            inst.status,
            "Y" if inst.auto_balance else "N",
            inst.pnode,
            inst.snode or "",
            inst.disk_template,
            _list(values=inst.tags, what="instance tag"),
            str(inst.spindle_use),
            "-" if inst.disk_spindles is None else str(inst.disk_spindles),
            "Y" if inst.forthcoming else "N",
        ]
    )


def render(cluster: BCluster) -> str:
    """The cluster in htools' text format (what `hbal -t` reads)."""
    groups = all_groups(cluster=cluster)
    uuids = {g.name: g.uuid for g in groups}
    node_names = {n.name for n in cluster.nodes}
    for inst in cluster.instances:
        for holder in (inst.pnode, inst.snode):
            if holder is not None and holder not in node_names:
                raise ValueError(f"instance {inst.name} names unknown node {holder}")
    group_lines = [
        "|".join(
            [
                _field(value=g.name, what="group name"),
                _field(value=g.uuid, what="group uuid"),
                g.alloc_policy,
                _list(values=g.tags, what="group tag"),
                _list(values=g.networks, what="group network"),
            ]
        )
        for g in groups
    ]
    node_lines = [_node_line(node=n, uuid=uuids[n.group]) for n in cluster.nodes]
    inst_lines = [_instance_line(i) for i in cluster.instances]
    tag_lines = [_field(value=t, what="cluster tag") for t in cluster.cluster_tags]
    policy_lines = [_policy_line(owner="", policy=cluster.policy)]
    policy_lines += [
        _policy_line(owner=g.name, policy=g.policy) for g in groups if g.policy is not None
    ]

    def block(lines: list[str]) -> str:
        return "".join(line + "\n" for line in lines)

    return "\n".join(
        block(lines) for lines in (group_lines, node_lines, inst_lines, tag_lines, policy_lines)
    )


# --------------------------------------------------------------------------- parse


class _Line:
    def __init__(self, *, number: int, text: str) -> None:
        self.number = number
        self.text = text

    def fail(self, why: str) -> ValueError:
        return ValueError(f"line {self.number}: {why}: {self.text!r}")

    def fields(self) -> list[str]:
        return self.text.split("|")

    def conv(self, value: str, kind: Callable[[str], _T], what: str) -> _T:
        try:
            return kind(value)
        except ValueError:
            raise self.fail(f"bad {what} {value!r}") from None

    def int(self, value: str, what: str) -> int:
        return self.conv(value, read_int, what)

    def double(self, value: str, what: str) -> float:
        return self.conv(value, read_double, what)


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(value.split(",")) if value else ()


def _yes_no(line: _Line, value: str, what: str) -> bool:
    if value == "Y":
        return True
    if value == "N":
        return False
    raise line.fail(f"{what} must be Y or N, not {value!r}")


def _parse_group(line: _Line) -> BGroup:
    f = line.fields()
    if len(f) < 4:
        raise line.fail("a group needs name|uuid|alloc_policy|tags[|networks]")
    if f[2] not in _ALLOC_POLICIES:
        raise line.fail(f"unknown allocation policy {f[2]!r}")
    return BGroup(
        name=f[0],
        uuid=f[1],
        alloc_policy=f[2],
        tags=_split_list(f[3]),
        networks=_split_list(f[4]) if len(f) > 4 else (),
    )


def _parse_node(line: _Line, groups_by_uuid: dict[str, str]) -> BNode:
    f = line.fields()
    if len(f) < 9:
        raise line.fail("a node needs at least name|t_mem|n_mem|f_mem|t_dsk|f_dsk|t_cpu|role|group")
    defaults = ["1", "", "N", "0", "1", "1.0"]  # spindles .. cpu_speed, as htools fill them
    f = f + defaults[len(f) - 9 :] if len(f) < 15 else f
    name, tm, nm, fm, td, fd, tc, role, gu = f[:9]
    if gu not in groups_by_uuid:
        raise line.fail(f"unknown group uuid {gu!r}")
    if "?" in (tm, nm, fm, td, fd, tc):
        # htools read a node with unknown resources as an empty, offline node,
        # without its tags and with every other column ignored.
        return BNode(
            name=name,
            t_mem=0,
            n_mem=0,
            f_mem=0,
            t_dsk=0,
            f_dsk=0,
            t_cpu=0,
            offline=True,
            group=groups_by_uuid[gu],
            spindles=0,
            os_cpus=0,
        )
    return BNode(
        name=name,
        t_mem=line.double(tm, "t_mem"),
        n_mem=line.int(nm, "n_mem"),
        f_mem=line.int(fm, "f_mem"),
        t_dsk=line.double(td, "t_dsk"),
        f_dsk=line.int(fd, "f_dsk"),
        t_cpu=line.double(tc, "t_cpu"),
        offline=role == "Y",
        master=role == "M",
        group=groups_by_uuid[gu],
        tags=_split_list(f[10]),
        spindles=line.int(f[9], "spindles"),
        exclusive_storage=_yes_no(line, f[11], "exclusive_storage"),
        free_spindles=line.int(f[12], "free_spindles"),
        os_cpus=line.int(f[13], "os_cpus"),
        cpu_speed=line.double(f[14], "cpu_speed"),
    )


def _parse_instance(line: _Line, nodes: set[str]) -> BInstance:
    f = line.fields()
    if len(f) < 10:
        raise line.fail(
            "an instance needs at least name|mem|dsk|vcpus|status|auto_balance|pnode|"
            "snode|disk_template|tags"
        )
    f = f + ["1", "-", "N"][len(f) - 10 :] if len(f) < 13 else f
    name, mem, dsk, vcpus, status, auto_bal, pnode, snode, dt, tags, su, spindles, fc = f[:13]
    if pnode not in nodes:
        raise line.fail(f"unknown primary node {pnode!r}")
    if snode and snode not in nodes:
        raise line.fail(f"unknown secondary node {snode!r}")
    memory = line.int(mem, "memory")
    disk = line.int(dsk, "disk")
    cpus = line.int(vcpus, "vcpus")
    if status not in STATUSES:
        raise line.fail(f"unknown instance status {status!r}")
    balanced = _yes_no(line, auto_bal, "auto_balance")
    if dt not in DISK_TEMPLATES:
        raise line.fail(f"unknown disk template {dt!r}")
    spindle_use = line.int(su, "spindle_use")
    disk_spindles = None if spindles == "-" else line.int(spindles, "disk spindles")
    forthcoming = _yes_no(line, fc, "forthcoming")
    if snode and snode == pnode and dt == "drbd":
        raise line.fail("primary and secondary node are the same")
    return BInstance(
        name=name,
        mem=memory,
        dsk=disk,
        vcpus=cpus,
        status=status,
        auto_balance=balanced,
        pnode=pnode,
        snode=snode or None,
        tags=_split_list(tags),
        spindle_use=spindle_use,
        disk_template=dt,
        disk_spindles=disk_spindles,
        forthcoming=forthcoming,
    )


def _parse_spec(line: _Line, text: str, what: str) -> ISpec:
    parts = text.split(",")
    if len(parts) < 6:
        raise line.fail(f"{what} needs six values mem,cpu,disk,disk_count,nic_count,spindles")
    v = [line.int(p, what) for p in parts[:6]]
    return (v[0], v[1], v[2], v[3], v[4], v[5])


def _parse_policy(line: _Line) -> tuple[str, BPolicy]:
    f = line.fields()
    if len(f) < 6:
        raise line.fail("a policy needs owner|std|min;max|disk_templates|vcpu_ratio|spindle_ratio")
    owner, std, minmax, dts, vcpu, spindle = f[:6]
    specs = minmax.split(";") if minmax else []
    if len(specs) % 2:
        raise line.fail("odd number of min/max specs")
    pairs = tuple(
        (_parse_spec(line, specs[i], "min spec"), _parse_spec(line, specs[i + 1], "max spec"))
        for i in range(0, len(specs), 2)
    )
    templates = _split_list(dts)
    for t in templates:
        if t not in DISK_TEMPLATES:
            raise line.fail(f"unknown disk template {t!r}")
    return owner, BPolicy(
        std_spec=_parse_spec(line, std, "std spec"),
        min_max=pairs,
        disk_templates=templates,
        vcpu_ratio=line.double(vcpu, "vcpu_ratio"),
        spindle_ratio=line.double(spindle, "spindle_ratio"),
    )


def _sections(text: str) -> list[list[_Line]]:
    raw = text.split("\n")
    if raw and raw[-1] == "":
        raw.pop()  # a final newline ends the last line, it does not start a new one
    sections: list[list[_Line]] = [[]]
    for number, content in enumerate(raw, start=1):
        content = content.removesuffix("\r")
        if content == "":
            sections.append([])
        else:
            sections[-1].append(_Line(number=number, text=content))
    return sections


def parse(text: str) -> BCluster:
    """Read htools' text format. Raises ValueError naming the offending line."""
    sections = _sections(text)
    if len(sections) == 4:
        sections.append([])
    if len(sections) < 5:
        raise ValueError(
            f"invalid htools text: {len(sections)} sections separated by empty lines, "
            "expected 4 or more (groups, nodes, instances, cluster tags[, policies])"
        )
    glines, nlines, ilines, tlines, plines = sections[:5]
    groups = [_parse_group(line) for line in glines]
    by_uuid: dict[str, str] = {}
    for g, line in zip(groups, glines, strict=True):
        if g.uuid in by_uuid or g.name in by_uuid.values():
            raise line.fail("duplicate group")
        by_uuid[g.uuid] = g.name
    nodes = [_parse_node(line, by_uuid) for line in nlines]
    names: set[str] = set()
    for n, line in zip(nodes, nlines, strict=True):
        if n.name in names:
            raise line.fail("duplicate node")
        names.add(n.name)
    instances = [_parse_instance(line, names) for line in ilines]
    seen: set[str] = set()
    for i, line in zip(instances, ilines, strict=True):
        if i.name in seen:
            raise line.fail("duplicate instance")
        seen.add(i.name)
    cluster_policy = BPolicy()
    group_policies: dict[str, BPolicy] = {}
    for line in plines:
        owner, pol = _parse_policy(line)
        if owner == "":
            cluster_policy = pol
        elif owner in by_uuid.values():
            group_policies[owner] = pol
        else:
            raise line.fail(f"policy for unknown group {owner!r}")
    return BCluster(
        nodes=tuple(nodes),
        instances=tuple(instances),
        groups=tuple(
            BGroup(
                name=g.name,
                uuid=g.uuid,
                alloc_policy=g.alloc_policy,
                tags=g.tags,
                networks=g.networks,
                policy=group_policies.get(g.name),
            )
            for g in groups
        ),
        cluster_tags=tuple(line.text for line in tlines),
        policy=cluster_policy,
    )
