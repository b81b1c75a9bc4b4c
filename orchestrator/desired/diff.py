"""What applying a desired-state file would change: the difference between the
live desired state (folded from the log, including imperative commands such as
`corral instance stop`) and a loaded file, as a list of changes a person can read
(the events that record them are `orchestrator.desired.record`'s).

Pure: no I/O, no logging, no clock (time and ids are passed in).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import StrEnum

from events.ids import InstanceName, NodeName
from events.specs import HV_FIELDS, DesiredCluster, GroupSpec, InstanceSpec, PowerState
from events.state import ClusterState
from orchestrator.desired.macs import cluster_with_macs
from reactors.placement.allocator import missing_bridges
from reactors.placement.resize import check_resize


class Action(StrEnum):
    CREATE = "create"
    MODIFY = "modify"
    REMOVE = "remove"
    START = "start"
    STOP = "stop"


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldChange:
    field: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.field}: {self.old} -> {self.new}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    action: Action
    kind: str  # "cluster", "node" or "instance"
    name: str
    fields: tuple[FieldChange, ...] = ()
    notes: tuple[str, ...] = ()
    forced: tuple[str, ...] = ()  # refusals the apply was forced past (recorded)
    # NICs added to a running instance: the apply submits an instance.hotplug job
    hotplug_nics: tuple[int, ...] = ()
    added_disks: tuple[int, ...] = ()  # disks appended to a placed instance: the same job
    # The last disk dropped from a placed instance: the apply submits an
    # instance.remove-disk job (the spec is recorded with it kept; the job records
    # the removal, then clears the disk off both nodes). Destructive.
    removed_disk: int | None = None
    destructive: tuple[str, ...] = ()  # what the change destroys (needs --allow-destroy)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Diff:
    changes: tuple[Change, ...]
    problems: tuple[str, ...]  # why the file cannot be applied as it is
    drift: bool  # the file equals the last applied one: every change undoes a command
    # The file's cluster with every NIC's MAC (kept or generated): what is recorded.
    wanted: DesiredCluster | None = None

    @property
    def empty(self) -> bool:
        return not self.changes


def _show(value: object) -> str:
    if isinstance(value, frozenset):
        return "[" + ", ".join(sorted(str(v) for v in value)) + "]"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if value is None:
        return "-"
    if hasattr(value, "__dataclass_fields__"):
        inner = ", ".join(
            f"{f.name}={_show(getattr(value, f.name))}"
            for f in fields(value)  # type: ignore[arg-type]
            if getattr(value, f.name) not in (None, (), frozenset())
        )
        return "{" + inner + "}"
    return str(value)


def _size(value: int) -> str:
    return f"{value // 1024}G" if value % 1024 == 0 and value >= 1024 else f"{value}M"


_SIZE_FIELDS = {"memory_mib", "disk_mib", "host_memory_mib"}


def _field_changes(old: object, new: object, *, skip: frozenset[str]) -> list[FieldChange]:
    out = []
    for f in fields(old):  # type: ignore[arg-type]
        if f.name in skip:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if f.name in _SIZE_FIELDS:
            out.append(FieldChange(field=f.name.removesuffix("_mib"), old=_size(a), new=_size(b)))
        elif f.name == "hv":
            out.extend(
                FieldChange(
                    field=f"hvparams.{k}", old=getattr(a, k) or "-", new=getattr(b, k) or "-"
                )
                for k in HV_FIELDS
                if getattr(a, k) != getattr(b, k)
            )
        elif f.name == "disks":
            out.append(
                FieldChange(
                    field="disks",
                    old="[" + ", ".join(_size(d.size_mib) for d in a) + "]",
                    new="[" + ", ".join(_size(d.size_mib) for d in b) + "]",
                )
            )
        else:
            out.append(FieldChange(field=f.name, old=_show(a), new=_show(b)))
    return out


def _disk_problems(
    *, old: InstanceSpec, new: InstanceSpec, placed: bool, allow_destroy: bool
) -> tuple[list[str], list[str], list[str]]:
    """(problems, notes, what is destroyed) of an instance's disk list changing:
    disks grown, added at the end, or its last one dropped (of an instance not
    placed yet, only the spec changes: no node holds its disks)."""
    problems: list[str] = []
    notes: list[str] = []
    destroyed: list[str] = []
    for i, (a, b) in enumerate(zip(old.disks, new.disks, strict=False)):
        if b.size_mib < a.size_mib:
            problems.append(
                f"instance {new.name}: disk {i} cannot shrink "
                f"({_size(a.size_mib)} -> {_size(b.size_mib)})"
            )
        elif b.size_mib > a.size_mib:
            notes.append(f"disk {i} grows online by {_size(b.size_mib - a.size_mib)}")
    if not placed:
        return problems, notes, destroyed
    for i in range(len(old.disks), len(new.disks)):
        how = (
            "hotplugged into the running VM once its pair is up (an instance.hotplug job; "
            "refused by qemu: not recorded, the pair removed)"
            if new.power is PowerState.RUNNING
            else "attached at its next start"
        )
        notes.append(f"disk {i} ({_size(new.disks[i].size_mib)}) added: a new DRBD pair, {how}")
    if len(new.disks) >= len(old.disks):
        return problems, notes, destroyed
    last = len(old.disks) - 1
    if len(old.disks) - len(new.disks) > 1:
        problems.append(
            f"instance {new.name}: disks are removed one at a time, the last first "
            f"({len(old.disks)} -> {len(new.disks)}); drop disk {last} alone"
        )
        return problems, notes, destroyed
    if new.power is not PowerState.STOPPED:
        problems.append(
            f"instance {new.name}: disk {last} can be removed only while it is stopped "
            "(give it `state: stopped` in the same file, or stop it first)"
        )
    destroyed.append(
        f"disk {last} ({_size(old.disks[last].size_mib)}) removed: its DRBD resource and "
        "LVs deleted on both nodes, its data lost (an instance.remove-disk job)"
    )
    if not allow_destroy:
        problems.append(
            f"instance {new.name}: dropping disk {last} destroys its data; pass --allow-destroy"
        )
    return problems, notes, destroyed


def _bridge_problem(
    state: ClusterState, old: InstanceSpec, new: InstanceSpec, *, where: str
) -> str | None:
    """A NIC whose bridge a node of the placed instance lacks (as it reports),
    naming the files (`where`) and the field."""
    placement = state.placements.get(InstanceName(new.name))
    if placement is None or old.nics == new.nics:
        return None
    for node in (placement.primary, placement.secondary):
        why = missing_bridges(state=state, spec=new, node=node)
        if why:
            return f"{where + ': ' if where else ''}instance {new.name}: {why}"
    return None


def _instance_problems(
    *,
    state: ClusterState,
    old: InstanceSpec,
    new: InstanceSpec,
    force: bool,
    allow_destroy: bool = False,
    where: str = "",
) -> tuple[list[str], list[str], list[str], list[str]]:
    """(problems, notes, refusals forced past, what is destroyed) of an in-place
    change."""
    placed = InstanceName(new.name) in state.placements
    forced: list[str] = []
    problems, notes, destroyed = _disk_problems(
        old=old, new=new, placed=placed, allow_destroy=allow_destroy
    )
    bridge = _bridge_problem(state, old, new, where=where)
    if bridge:
        problems.append(bridge)
    if placed and (old.memory_mib != new.memory_mib or old.vcpus != new.vcpus):
        notes.append(
            f"in place; restart needed: memory/vcpus take effect at the next "
            f"`corral instance reboot {new.name}`"
        )
    added = _added_nics(old, new)
    if placed and added and new.power is PowerState.RUNNING:
        notes.append(
            f"{', '.join(f'nics[{i}]' for i in added)} hotplugged into the running VM "
            "(an instance.hotplug job; refused by qemu: not recorded)"
        )
    elif placed and old.nics != new.nics and not added and _only_addressing(old, new):
        notes.append(
            "in place; NIC addressing (ip, gateway, nameservers) reaches the guest only "
            "through its cloud-init seed, which it applies once per install: at the next "
            f"`corral instance reinstall {new.name}`"
        )
    elif placed and old.nics != new.nics and not added:
        notes.append(
            f"in place; restart needed: NIC changes other than additions take effect at "
            f"the next `corral instance reboot {new.name}`"
        )
    if placed and old.hv != new.hv:
        notes.append(
            f"in place; restart needed: hvparams take effect at the next "
            f"`corral instance reboot {new.name}`"
        )
    if placed and not problems:
        verdict = check_resize(state=state, old=old, new=_kept_disks(old, new))
        notes.extend(verdict.effects)
        if force:
            forced.extend(verdict.refusals)
            notes.extend(f"forced past: {r}" for r in verdict.refusals)
        else:
            problems.extend(
                f"instance {new.name}: {r} (apply --force to record it anyway)"
                for r in verdict.refusals
            )
    if placed and (old.primary != new.primary or old.secondary != new.secondary):
        notes.append(
            "pins apply to future placements; move it now with "
            f"`corral instance migrate {new.name}` or `replace-disks`"
        )
    return problems, notes, forced, destroyed


def _kept_disks(old: InstanceSpec, new: InstanceSpec) -> InstanceSpec:
    """`new` with a dropped last disk kept: what the apply records (the job
    records the removal itself)."""
    return replace(new, disks=old.disks) if len(new.disks) < len(old.disks) else new


def _policy_notes(*, live: DesiredCluster, wanted: DesiredCluster) -> tuple[str, ...]:
    if not live.name:
        return ()
    notes = []
    if live.policy.hv != wanted.policy.hv:
        notes.append("hvparams take effect at each instance's next start")
    if live.policy.mac_prefix != wanted.policy.mac_prefix:
        notes.append(
            f"MACs already recorded keep their prefix; NICs given none from now on get "
            f"{wanted.policy.mac_prefix}:xx:xx:xx"
        )
    return tuple(notes)


def diff_desired(
    *,
    state: ClusterState,
    wanted: DesiredCluster,
    absent: frozenset[InstanceName] = frozenset(),
    digest: str = "",
    allow_destroy: bool = False,
    force: bool = False,
    files: tuple[str, ...] = (),
) -> Diff:
    """Compare the live desired state with `wanted`. Instances missing from the file
    are removed only with `allow_destroy` or when marked absent; nodes that still
    hold instances are never removed. An instance's new size must fit where it is
    placed (`reactors.placement.resize`) unless `force`, which the apply records."""
    live = state.desired
    wanted = cluster_with_macs(wanted=wanted, live=live)
    changes: list[Change] = []
    problems: list[str] = []
    if live.name and wanted.name != live.name:
        problems.append(
            f"the file is for cluster {wanted.name!r} but this etcd holds cluster {live.name!r}"
        )
    if wanted.name != live.name or wanted.policy != live.policy:
        changes.append(
            Change(
                action=Action.CREATE if not live.name else Action.MODIFY,
                kind="cluster",
                name=wanted.name,
                fields=tuple(
                    _field_changes(live.policy, wanted.policy, skip=frozenset())
                    if live.name
                    else ()
                ),
                notes=_policy_notes(live=live, wanted=wanted),
            )
        )
    changes.extend(_group_changes(live=live, wanted=wanted))
    for name in sorted(wanted.nodes):
        new = wanted.nodes[name]
        old = live.nodes.get(name)
        if old is None:
            changes.append(Change(action=Action.CREATE, kind="node", name=name))
        elif old != new:
            changes.append(
                Change(
                    action=Action.MODIFY,
                    kind="node",
                    name=name,
                    fields=tuple(_field_changes(old, new, skip=frozenset())),
                )
            )
    placed_on: dict[NodeName, list[str]] = {}
    for inst, p in state.placements.items():
        for n in (p.primary, p.secondary):
            placed_on.setdefault(n, []).append(inst)
    for name in sorted(set(live.nodes) - set(wanted.nodes)):
        holding = sorted(i for i in placed_on.get(name, []) if i not in absent)
        kept = [i for i in holding if i in wanted.instances]
        if kept:
            problems.append(
                f"node {name} cannot be removed: it holds {len(kept)} instance(s) "
                f"({', '.join(kept[:5])}{'...' if len(kept) > 5 else ''}); "
                f"run `corral node evacuate {name}` first"
            )
        changes.append(Change(action=Action.REMOVE, kind="node", name=name))
    recorded = dict(wanted.instances)
    for iname in sorted(wanted.instances):
        old_spec = live.instances.get(iname)
        change = _instance_change(
            state=state,
            old=old_spec,
            new=wanted.instances[iname],
            force=force,
            allow_destroy=allow_destroy,
            problems=problems,
            where=", ".join(files),
        )
        if change is not None:
            changes.append(change)
        if change is not None and change.removed_disk is not None and old_spec is not None:
            recorded[iname] = _kept_disks(old_spec, wanted.instances[iname])
    wanted = replace(wanted, instances=recorded)
    for gone in sorted(set(live.instances) - set(wanted.instances)):
        if gone not in absent and not allow_destroy:
            problems.append(
                f"instance {gone} is not in the file: removing it destroys its disks; "
                "pass --allow-destroy or mark it `state: absent`"
            )
        changes.append(Change(action=Action.REMOVE, kind="instance", name=gone))
    drift = bool(changes and state.last_applied is not None and state.last_applied.digest == digest)
    return Diff(changes=tuple(changes), problems=tuple(problems), drift=drift, wanted=wanted)


def _only_addressing(old: InstanceSpec, new: InstanceSpec) -> bool:
    """The NICs differ only in what the guest's seed carries (ip, its prefix,
    gateway, nameservers)."""
    plain = {"ip": None, "prefix_len": None, "gateway": None, "nameservers": ()}
    return len(old.nics) == len(new.nics) and all(
        replace(a, **plain) == replace(b, **plain)  # type: ignore[arg-type]
        for a, b in zip(old.nics, new.nics, strict=True)
    )


def _added_nics(old: InstanceSpec, new: InstanceSpec) -> tuple[int, ...]:
    """The NICs `new` appends to `old`'s, unchanged (what a hotplug can add)."""
    if len(new.nics) <= len(old.nics) or new.nics[: len(old.nics)] != old.nics:
        return ()
    return tuple(range(len(old.nics), len(new.nics)))


def _group_changes(*, live: DesiredCluster, wanted: DesiredCluster) -> list[Change]:
    """Groups the file declares differently from the live ones (tags, hvparams)."""
    changes = []
    for gname in sorted(wanted.groups):
        group, was = wanted.groups[gname], live.groups.get(gname)
        if group != (was or GroupSpec(name=gname)):
            changes.append(
                Change(
                    action=Action.MODIFY if was else Action.CREATE,
                    kind="group",
                    name=gname,
                    fields=tuple(_field_changes(was, group, skip=frozenset({"name"})))
                    if was
                    else (),
                    notes=("hvparams take effect at each instance's next start",)
                    if was and was.hv != group.hv
                    else (),
                )
            )
    return changes


def _instance_change(
    *,
    state: ClusterState,
    old: InstanceSpec | None,
    new: InstanceSpec,
    force: bool,
    allow_destroy: bool = False,
    problems: list[str],
    where: str = "",
) -> Change | None:
    """How one declared instance changes (None: it does not); what the change may
    not do goes to `problems` (`where`: the files, named by a bridge problem)."""
    if old is None:
        return Change(action=Action.CREATE, kind="instance", name=new.name)
    if old == new:
        return None
    bad, notes, forced, destroyed = _instance_problems(
        state=state, old=old, new=new, force=force, allow_destroy=allow_destroy, where=where
    )
    problems.extend(bad)
    if old.power != new.power and old == _with_power(new, old.power):
        action = Action.START if new.power is PowerState.RUNNING else Action.STOP
        return Change(action=action, kind="instance", name=new.name)
    placed = InstanceName(new.name) in state.placements
    removed = len(old.disks) - 1 if placed and len(new.disks) < len(old.disks) else None
    return Change(
        action=Action.MODIFY,
        kind="instance",
        name=new.name,
        fields=tuple(_field_changes(old, new, skip=frozenset({"name"}))),
        notes=tuple(notes),
        forced=tuple(forced),
        hotplug_nics=_added_nics(old, new) if placed and new.power is PowerState.RUNNING else (),
        added_disks=tuple(range(len(old.disks), len(new.disks))) if placed else (),
        removed_disk=removed,
        destructive=tuple(destroyed),
    )


def _with_power(spec: InstanceSpec, power: PowerState) -> InstanceSpec:
    return replace(spec, power=power)
