"""Changes to an instance after creation, shared by the CLI, the native API and the
RAPI: memory and vCPUs (`modify`) and its name (`rename`, of a stopped instance
only: the job renames its LVs and DRBD resources on both nodes, then records
`instance.renamed`). A modify is a job whose submission carries the
changed spec in the same etcd transaction, so what was decided and who asked are
one record. A change that does not fit where the instance is placed (memory on the
primary, the vCPU ratio, N+1 on the secondary: `reactors.placement.resize`) is
refused with the reasons and the N+1 effect, unless forced; a forced change says in
its recorded reason what it was forced past.

Must not run node commands or wait for the job; the new size reaches the VM at its
next start (`corral instance reboot`), as the job's log says.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace

from events.ids import InstanceName, check_name, new_event_id
from events.model import InstanceUpdated, JobKind
from events.specs import HV_FIELDS, HvParams, InstanceSpec
from events.state import ClusterState
from events.validation import SpecError, check_field
from orchestrator.operations import Accepted, EventAppender, OperationRefused, submit_job
from reactors.placement.resize import ResizeVerdict, check_resize
from reactors.plans.rename import rename_blockers


class ChangeRefused(OperationRefused):
    """A change that does not fit; `verdict` holds every reason and the N+1 effect."""

    def __init__(self, message: str, *, field: str, verdict: ResizeVerdict) -> None:
        super().__init__(message, field=field)
        self.verdict = verdict


def _mib(value: int) -> str:
    return f"{value // 1024}G" if value % 1024 == 0 else f"{value}M"


def _checked(field: str, value: object) -> int:
    try:
        got: int = check_field(InstanceSpec, field, value)
    except SpecError as exc:
        raise OperationRefused(str(exc), field=field.removesuffix("_mib")) from None
    return got


def modified_spec(
    spec: InstanceSpec,
    *,
    memory_mib: int | None,
    vcpus: int | None,
    hv: Mapping[str, str] | None = None,
) -> InstanceSpec:
    """`spec` with the new memory, vCPUs and hvparams (a value "default" unsets
    one: the group's or cluster's applies, as in Ganeti), each checked by the field
    rules."""
    if memory_mib is None and vcpus is None and not hv:
        raise OperationRefused("nothing to change: give memory, vcpus or hvparams", field="memory")
    new = spec
    if memory_mib is not None:
        new = replace(new, memory_mib=_checked("memory_mib", memory_mib))
    if vcpus is not None:
        new = replace(new, vcpus=_checked("vcpus", vcpus))
    if hv:
        new = replace(new, hv=_hv(spec.hv, hv))
    return new


def _hv(old: HvParams, given: Mapping[str, str]) -> HvParams:
    unknown = sorted(set(given) - set(HV_FIELDS))
    if unknown:
        raise OperationRefused(
            f"hvparams: unknown {', '.join(unknown)}; known: {', '.join(HV_FIELDS)}",
            field=f"hvparams.{unknown[0]}",
        )
    values = {}
    for key, value in given.items():
        value = "" if value == "default" else value
        try:
            values[key] = check_field(HvParams, key, value)
        except SpecError as exc:
            raise OperationRefused(f"hvparams.{exc}", field=f"hvparams.{key}") from None
    return replace(old, **values)


def hv_conflicts(state: ClusterState, spec: InstanceSpec) -> None:
    """Refuse hvparams whose effective values (over the primary's group's and the
    cluster's) break a rule spanning them."""
    placement = state.placements.get(InstanceName(spec.name))
    node = state.desired.nodes.get(placement.primary) if placement else None
    group = state.desired.groups.get(node.group) if node else None
    base = group.hv.over(state.desired.policy.hv) if group else state.desired.policy.hv
    conflicts = spec.hv.over(base).conflicts()
    if conflicts:
        raise OperationRefused(
            f"hvparams (with the group's and cluster's): {'; '.join(conflicts)}", field="hvparams"
        )


def describe(old: InstanceSpec, new: InstanceSpec) -> str:
    parts = []
    if old.memory_mib != new.memory_mib:
        parts.append(f"memory {_mib(old.memory_mib)} -> {_mib(new.memory_mib)}")
    if old.vcpus != new.vcpus:
        parts.append(f"vcpus {old.vcpus} -> {new.vcpus}")
    parts.extend(
        f"hvparams.{k} {getattr(old.hv, k) or '-'} -> {getattr(new.hv, k) or '-'}"
        for k in HV_FIELDS
        if getattr(old.hv, k) != getattr(new.hv, k)
    )
    return ", ".join(parts) or "no change"


def refusal_field(refusal: str) -> str:
    """The field a `check_resize` refusal is about (its text starts with it)."""
    return refusal.partition(":")[0]


def fit_or_refuse(
    *, state: ClusterState, old: InstanceSpec, new: InstanceSpec, force: bool
) -> ResizeVerdict:
    """The verdict on `new` where `old` is placed; ChangeRefused unless it fits or
    `force` is given."""
    verdict = check_resize(state=state, old=old, new=new)
    if verdict.fits or force:
        return verdict
    effects = "; ".join(verdict.effects)
    raise ChangeRefused(
        f"{old.name}: {'; '.join(verdict.refusals)}"
        + (f" ({effects})" if effects else "")
        + "; force it to change anyway (recorded)",
        field=refusal_field(verdict.refusals[0]),
        verdict=verdict,
    )


async def modify_instance(  # noqa: PLR0913  (keyword-only: what changes, who, why)
    store: EventAppender,
    state: ClusterState,
    *,
    instance: str,
    memory_mib: int | None = None,
    vcpus: int | None = None,
    hv: Mapping[str, str] | None = None,
    force: bool = False,
    actor: str,
    reason: str = "",
) -> Accepted:
    """Record a memory/vCPU/hvparams change of `instance` as an `instance.modify`
    job (hvparams take effect at the next start, like memory)."""
    old = state.desired.instances.get(InstanceName(instance))
    if old is None:
        raise OperationRefused(f"no instance named {instance!r}", field="instance")
    new = modified_spec(old, memory_mib=memory_mib, vcpus=vcpus, hv=hv)
    if new == old:
        raise OperationRefused(
            f"{instance} already has memory {_mib(old.memory_mib)}, {old.vcpus} vcpus"
            + (" and these hvparams" if hv else ""),
            field="memory" if memory_mib is not None else "vcpus" if vcpus else "hvparams",
        )
    hv_conflicts(state, new)
    verdict = fit_or_refuse(state=state, old=old, new=new, force=force)
    what = describe(old, new)
    why = f"modify {instance}: {what}"
    if verdict.refusals:
        why += f"; forced past: {'; '.join(verdict.refusals)}"
    if verdict.effects:
        why += f"; {'; '.join(verdict.effects)}"
    if reason:
        why += f"; {reason}"
    params = {"memory_mib": str(new.memory_mib), "vcpus": str(new.vcpus)}
    params.update((f"hv.{k}", v or "default") for k, v in (hv or {}).items())
    if force:
        params["force"] = "yes"
    update = InstanceUpdated(id=new_event_id(), time=time.time(), actor=actor, reason=why, spec=new)
    return await submit_job(
        store,
        state,
        kind=JobKind.INSTANCE_MODIFY,
        target=instance,
        params=params,
        actor=actor,
        reason=reason or why,
        follow=(update,),
    )


async def rename_instance(
    store: EventAppender,
    state: ClusterState,
    *,
    instance: str,
    new_name: str,
    actor: str,
    reason: str = "",
) -> Accepted:
    """Record the rename of a stopped `instance` to `new_name` as an
    `instance.rename` job; refused, naming why, while it runs or when the name is
    taken (by an instance, or by disks or a VM some node still reports)."""
    try:
        new = InstanceName(check_name(new_name, what="new name"))
    except ValueError as exc:
        raise OperationRefused(str(exc), field="new_name") from None
    old = InstanceName(instance)
    if old not in state.desired.instances:
        raise OperationRefused(f"no instance named {instance!r}", field="instance")
    blockers = rename_blockers(state=state, instance=old, new=new)
    if blockers:
        raise OperationRefused(
            f"cannot rename {instance} to {new}: {'; '.join(blockers)}", field="new_name"
        )
    return await submit_job(
        store,
        state,
        kind=JobKind.INSTANCE_RENAME,
        target=instance,
        params={"new_name": new},
        actor=actor,
        reason=reason or f"rename {instance} to {new}",
    )


async def add_devices(
    store: EventAppender,
    state: ClusterState,
    *,
    new: InstanceSpec,
    actor: str,
    reason: str = "",
) -> Accepted:
    """Record NICs and disks appended to a placed instance's spec (`new`, MACs
    filled) with an `instance.hotplug` job: the job places and builds the new disks'
    DRBD pairs and hotplugs what is new into the running VM (a stopped one gets it at
    its next start); what qemu refuses is taken back out. Refused, recording
    nothing, when the disks do not fit where the instance is placed."""
    old = state.desired.instances.get(InstanceName(new.name))
    if old is None or InstanceName(new.name) not in state.placements:
        raise OperationRefused(f"no placed instance named {new.name!r}", field="instance")
    nics = tuple(range(len(old.nics), len(new.nics)))
    disks = tuple(range(len(old.disks), len(new.disks)))
    if new.nics[: len(old.nics)] != old.nics or new.disks[: len(old.disks)] != old.disks:
        raise OperationRefused("only additions at the end of nics and disks", field="nics")
    if not nics and not disks:
        raise OperationRefused("nothing to add", field="nics")
    fit_or_refuse(state=state, old=old, new=new, force=False)
    what = ", ".join([*(f"nics[{i}]" for i in nics), *(f"disk {i}" for i in disks)])
    update = InstanceUpdated(
        id=new_event_id(), time=time.time(), actor=actor, reason=f"add {what}", spec=new
    )
    return await submit_job(
        store,
        state,
        kind=JobKind.INSTANCE_HOTPLUG,
        target=new.name,
        params={
            "nics": ",".join(map(str, nics)),
            "disks": ",".join(map(str, disks)),
        },
        actor=actor,
        reason=reason or f"add {what} to {new.name}",
        follow=(update,),
    )
