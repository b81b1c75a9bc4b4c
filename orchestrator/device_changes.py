"""Devices taken out of or changed on an instance after creation, shared by the
CLI, the native API and the RAPI: the NIC list edited (removed, changed, or given
whole; recorded as an `instance.updated` event with an `instance.modify` job,
taking effect at the next start; a NIC that stays keeps its MAC) and the last
disk removed (an `instance.remove-disk` job, which records the
removal and then clears the disk off both nodes). NICs appended unchanged go to
`orchestrator.instance_changes.add_devices` instead (hotplugged when running).

Every refusal names the field (`nics[1].link`, `disk`) and records nothing. Must
not run node commands or wait for the job.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from events.ids import InstanceName, new_event_id
from events.model import InstanceUpdated, JobKind
from events.specs import InstanceSpec, NicSpec
from events.state import ClusterState
from events.validation import SpecError, check_field
from orchestrator.desired.macs import used_macs, with_macs
from orchestrator.instance_changes import add_devices
from orchestrator.operations import Accepted, EventAppender, OperationRefused, submit_job
from reactors.placement.allocator import missing_bridges
from reactors.plans.disk_removal import removal_blockers

_NIC_FIELD = re.compile(r"nics\[\d+\]\.link")


def _spec(state: ClusterState, instance: str) -> InstanceSpec:
    spec = state.desired.instances.get(InstanceName(instance))
    if spec is None:
        raise OperationRefused(f"no instance named {instance!r}", field="instance")
    return spec


def bridge_refusal(state: ClusterState, spec: InstanceSpec) -> tuple[str, str] | None:
    """(field, why) when a node `spec`'s instance is placed on lacks a bridge one of
    its NICs names (as the node's probe reports its bridges); None when both have
    them all, or it is not placed yet (placement checks bridges itself)."""
    placement = state.placements.get(InstanceName(spec.name))
    if placement is None:
        return None
    for node in (placement.primary, placement.secondary):
        why = missing_bridges(state=state, spec=spec, node=node)
        if why:
            found = _NIC_FIELD.search(why)
            return (found.group(0) if found else "nics"), why
    return None


def others_macs(state: ClusterState, instance: str) -> set[str]:
    """The MACs every other instance holds."""
    return used_macs({n: s for n, s in state.desired.instances.items() if n != instance})


def with_checked_macs(
    spec: InstanceSpec, *, taken: set[str], prefix: str, live: InstanceSpec | None = None
) -> InstanceSpec:
    """`spec` once no MAC it gives is another instance's (`taken`) or given twice,
    each NIC without one filled (`orchestrator.desired.macs.with_macs`: the MAC of
    `live`'s NIC at its position, else a new one)."""
    seen: dict[str, int] = {}
    for i, nic in enumerate(spec.nics):
        if not nic.mac:
            continue
        if nic.mac in taken:
            raise OperationRefused(
                f"nics[{i}].mac {nic.mac} is already used by another instance",
                field=f"nics[{i}].mac",
            )
        if nic.mac in seen:
            raise OperationRefused(
                f"nics[{i}].mac {nic.mac} is also nics[{seen[nic.mac]}]'s", field=f"nics[{i}].mac"
            )
        seen[nic.mac] = i
    return with_macs(spec, taken=taken | set(seen), live=live, prefix=prefix)


def nics_given(
    spec: InstanceSpec, entries: Sequence[Mapping[str, Any]], *, taken: set[str], prefix: str
) -> InstanceSpec:
    """`spec` with its NIC list replaced by `entries` (NicSpec fields), held to the
    field rules; an entry without `mac` keeps the MAC of the NIC at its position
    (as in a desired-state file), else gets a new one unique in the cluster."""
    try:
        nics: tuple[NicSpec, ...] = check_field(InstanceSpec, "nics", list(entries))
    except SpecError as exc:
        raise OperationRefused(str(exc), field=exc.problems[0].path or "nics") from None
    return with_checked_macs(replace(spec, nics=nics), taken=taken, prefix=prefix, live=spec)


@dataclass(frozen=True, slots=True, kw_only=True)
class NicEdit:
    """One change to the NIC list: `op` "remove" or "modify" of the NIC at `index`
    (in the list as the edits before it left it; -1 is the last), `params` the
    fields a modify sets (the others, the MAC too unless given, are kept)."""

    op: str
    index: int
    params: Mapping[str, Any] = field(default_factory=dict)


_NIC_KEYS = ("mac", "link", "mode", "ip", "prefix_len", "gateway", "nameservers")


def nics_edited(spec: InstanceSpec, edits: Sequence[NicEdit]) -> InstanceSpec:
    """`spec` with `edits` applied in order (as Ganeti applies a modify's NIC
    operations), held to the field rules; a refusal names the NIC by the index its
    edit gave. A NIC whose `mac` a modify sets to None gets none here: the caller
    fills it (`with_macs`)."""
    current: list[tuple[int, dict[str, Any]]] = [
        (i, {k: getattr(nic, k) for k in _NIC_KEYS} | {"nameservers": list(nic.nameservers)})
        for i, nic in enumerate(spec.nics)
    ]
    for edit in edits:
        at = len(current) - 1 if edit.index == -1 else edit.index
        if edit.op not in ("remove", "modify"):
            raise OperationRefused(
                f"nics: {edit.op!r} is not remove or modify", field=f"nics[{edit.index}]"
            )
        if not 0 <= at < len(current):
            raise OperationRefused(
                f"{edit.op} nics[{edit.index}]: {spec.name} has "
                + (f"nics 0..{len(current) - 1}" if current else "no NICs"),
                field=f"nics[{edit.index}]",
            )
        if edit.op == "remove":
            del current[at]
            continue
        unknown = sorted(set(edit.params) - set(_NIC_KEYS))
        if unknown:
            raise OperationRefused(
                f"nics[{edit.index}].{unknown[0]} is not a NIC field ({', '.join(_NIC_KEYS)})",
                field=f"nics[{edit.index}].{unknown[0]}",
            )
        current[at] = (current[at][0], current[at][1] | dict(edit.params))
    try:
        nics = check_field(InstanceSpec, "nics", [f for _, f in current])
    except SpecError as exc:
        p = exc.problems[0]
        where = p.loc[1] if len(p.loc) > 1 and isinstance(p.loc[1], int) else None
        path = p.path
        if where is not None and where < len(current):
            path = re.sub(r"^nics\[\d+\]", f"nics[{current[where][0]}]", path)
        raise OperationRefused(f"{path}: {p.message}", field=path) from None
    return replace(spec, nics=nics)


def _describe_nics(old: InstanceSpec, new: InstanceSpec) -> str:
    def show(nics: tuple[NicSpec, ...]) -> str:
        return "[" + ", ".join(f"{n.link}/{n.mac}" for n in nics) + "]"

    return f"nics {show(old.nics)} -> {show(new.nics)}"


async def change_nics(
    store: EventAppender, state: ClusterState, *, new: InstanceSpec, actor: str, reason: str = ""
) -> Accepted:
    """Record `new` (the instance's spec with its edited NIC list, MACs filled):
    NICs only appended go to `add_devices` (hotplugged into a running VM); any
    other change is an `instance.updated` event with an `instance.modify` job and
    takes effect at the next start. Refused, naming the field, when a node the
    instance is placed on lacks a bridge, or nothing changes."""
    old = _spec(state, new.name)
    if new.nics == old.nics:
        raise OperationRefused(f"{new.name} already has these NICs", field="nics")
    if replace(new, nics=old.nics) != old:
        raise OperationRefused("only the NICs change here", field="nics")
    gap = bridge_refusal(state, new)
    if gap:
        raise OperationRefused(gap[1], field=gap[0])
    if (
        len(new.nics) > len(old.nics)
        and new.nics[: len(old.nics)] == old.nics
        and InstanceName(new.name) in state.placements
    ):
        return await add_devices(store, state, new=new, actor=actor, reason=reason)
    what = _describe_nics(old, new)
    update = InstanceUpdated(
        id=new_event_id(), time=time.time(), actor=actor, reason=what, spec=new
    )
    return await submit_job(
        store,
        state,
        kind=JobKind.INSTANCE_MODIFY,
        target=new.name,
        params={"nics": str(len(new.nics))},
        actor=actor,
        reason=reason or f"{new.name}: {what}",
        follow=(update,),
    )


async def remove_disk(
    store: EventAppender,
    state: ClusterState,
    *,
    instance: str,
    index: int | None = None,
    actor: str,
    reason: str = "",
) -> Accepted:
    """Record the removal of disk `index` (default: the last) of `instance` as an
    `instance.remove-disk` job; refused, naming why, unless it is the last disk,
    not the only one, and the instance is stopped."""
    spec = _spec(state, instance)
    last = len(spec.disks) - 1
    index = last if index is None else index
    if not 0 <= index <= last:
        raise OperationRefused(f"{instance} has no disk {index} (disks 0..{last})", field="disk")
    blockers = removal_blockers(state=state, instance=InstanceName(instance), index=index)
    if blockers:
        raise OperationRefused(
            f"cannot remove disk {index} of {instance}: {'; '.join(blockers)}", field="disk"
        )
    return await submit_job(
        store,
        state,
        kind=JobKind.INSTANCE_REMOVE_DISK,
        target=instance,
        params={"disk": str(index)},
        actor=actor,
        reason=reason or f"remove disk {index} of {instance}",
    )
