"""The native API's changing routes: desired-state plan and apply (a YAML document
in the body, checked by `orchestrator.desired.file`; every problem comes back as
422 with file/line/column/field), instance and node operations, and job cancel.
Each checks the principal's role and scope (`orchestrator.roles`), records through
`orchestrator.operations` (or one atomic apply) with the principal's name as the
actor, waits briefly until the orchestrator's fold shows the write, and answers
202 `{"job_id", "revision", "event_ids"}`.

Must not act on nodes or wait for jobs to finish (reactors do the work; clients follow
`/api/v1/jobs/{id}` or the event stream).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from events.ids import JobId
from events.specs import InstanceSpec
from events.state import ClusterState
from events.store import VersionConflict
from orchestrator.api.bodies import (
    INSTANCE_BODIES,
    DesiredRequest,
    GrowDiskRequest,
    ModifyRequest,
    NicsRequest,
    ReasonRequest,
    RemoveDiskRequest,
    RenameRequest,
    ReplaceDisksRequest,
)
from orchestrator.api.context import (
    ApiContext,
    ApiError,
    accepted_json,
    body_of,
    ctx_of,
    forbid,
    job_instance_tags,
    json_response,
    log_of,
    require_instance,
    require_node,
    require_role,
    require_unscoped,
    visible_job,
    wait_folded,
)
from orchestrator.desired.request import Planned, Refusal, ToApply, apply_request, plan_request
from orchestrator.device_changes import change_nics, nics_given, others_macs, remove_disk
from orchestrator.instance_changes import modify_instance, rename_instance
from orchestrator.offloop import Busy, TooSlow, WorkerFailed
from orchestrator.operations import (
    INSTANCE_VERBS,
    NODE_FLAG_VERBS,
    NODE_JOB_VERBS,
    Accepted,
    OperationRefused,
    cancel_job,
    confirm_node_off,
    set_node_flags,
    submit_job,
)
from orchestrator.roles import Action, Principal, may

NODE_ACTIONS = (*NODE_FLAG_VERBS, *NODE_JOB_VERBS, "confirm-off")


def _refused(exc: OperationRefused) -> ApiError:
    if exc.field in ("instance", "node"):
        return ApiError(404, "not_found", str(exc), field="name")
    if exc.field in ("target", "job_id"):
        return ApiError(409, "conflict", str(exc), field=exc.field)
    return ApiError(422, "refused", str(exc), field=exc.field or None)


async def _accepted(
    request: web.Request, ctx: ApiContext, mutation: Awaitable[Accepted], *, what: str
) -> web.Response:
    """Record `mutation` (a refusal answers 404, 409 or 422 naming the field),
    wait until the fold shows it, answer 202."""
    try:
        accepted = await mutation
    except OperationRefused as exc:
        raise _refused(exc) from None
    log_of(request).info(
        "api mutation recorded", what=what, revision=accepted.revision, job_id=accepted.job_id
    )
    await wait_folded(ctx, accepted.revision)
    return json_response(accepted_json(accepted), status=202)


# ---------------------------------------------------------------------- desired state


T = TypeVar("T")


async def _desired_off_loop(
    request: web.Request, work: Callable[..., T], principal: Principal
) -> tuple[T, ClusterState]:
    """`work` (plan_request or apply_request) on the request's files, in a worker
    process (safety rule 9): 503 when the workers are busy, 422 when it runs out
    of time (nothing recorded either way)."""
    data = await body_of(request, DesiredRequest)
    texts = [(f.name, f.text) for f in data.files]
    if len({n for n, _ in texts}) != len(texts):
        raise ApiError(422, "invalid", "two files have the same name", field="files")
    ctx = ctx_of(request)
    state = ctx.state()
    job = functools.partial(
        work,
        texts,
        state,
        cluster=ctx.store.cluster,
        author=principal.name,
        message=data.message,
        allow_destroy=data.allow_destroy,
        force=data.force,
        now=time.time(),
    )
    try:
        result = await ctx.workers.run(job)
    except Busy:
        raise ApiError(
            503, "busy", "desired-state checks are busy; retry in a moment", field="files"
        ) from None
    except (TooSlow, WorkerFailed) as exc:
        raise ApiError(
            422,
            "too_large",
            f"checking the desired state was stopped ({exc}); nothing was recorded: "
            "split the files, or check them with `corral plan -f` on a machine of your own",
            field="files",
        ) from None
    if isinstance(result, Refusal):
        raise ApiError(
            422, result.code, result.message, field="files", problems=list(result.problems)
        )
    return result, state


async def desired_plan(request: web.Request) -> web.Response:
    principal = require_role(request, Action.OPERATE)
    require_unscoped(request, "plan desired state")
    planned, _ = await _desired_off_loop(request, plan_request, principal)
    assert isinstance(planned, Planned)
    return json_response(planned.plan)


async def desired_apply(request: web.Request) -> web.Response:
    principal = require_role(request, Action.ADMIN)
    if not may(principal, Action.ADMIN):
        raise forbid(request, "a principal scoped to tags may not apply desired state")
    ctx = ctx_of(request)
    applied, state = await _desired_off_loop(request, apply_request, principal)
    assert isinstance(applied, ToApply)
    if not applied.events:
        return json_response(
            {"job_id": None, "revision": state.revision, "event_ids": [], "changes": 0}
        )
    events = list(applied.events)
    revision = state.revision
    done = 0
    for batch, batch_expected in ctx.store.transactions_for(events, expected=applied.expected):
        try:
            revision = await ctx.store.append(batch, expected=batch_expected)
        except VersionConflict as exc:
            recorded = (
                "nothing was recorded" if not done else f"{done} of {len(events)} events were"
            )
            raise ApiError(
                409,
                "conflict",
                f"{exc}: the cluster changed while applying; {recorded}; apply again",
                field="files",
            ) from None
        done += len(batch)
    log_of(request).info(
        "api desired state applied",
        revision=revision,
        changes=applied.changes,
        digest=applied.digest[:12],
    )
    await wait_folded(ctx, revision)
    return json_response(
        {
            "job_id": None,
            "revision": revision,
            "event_ids": [e.id for e in events],
            "changes": applied.changes,
        },
        status=202,
    )


# ---------------------------------------------------------------------- instances


def _instance_of(
    request: web.Request, needed: Action, *, verb: str
) -> tuple[Principal, ApiContext, ClusterState, InstanceSpec]:
    """The principal, the context, the state and the instance the path names, once
    the principal has the role `needed` and may `verb` that instance (its scope)."""
    principal = require_role(request, needed)
    ctx = ctx_of(request)
    state = ctx.state()
    spec = require_instance(state, principal, request.match_info["name"])
    if not may(principal, needed, instance_tags=spec.tags):
        raise forbid(request, f"{principal.name} may not {verb} {spec.name}")
    return principal, ctx, state, spec


async def instance_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in INSTANCE_VERBS:
        raise ApiError(404, "not_found", f"no instance action {action!r}", field="action")
    principal, ctx, state, spec = _instance_of(request, Action.OPERATE, verb="operate")
    data = await body_of(request, INSTANCE_BODIES.get(action, ReasonRequest))
    params: dict[str, str] = {}
    if isinstance(data, ReplaceDisksRequest):
        params["mode"] = data.mode
        if data.new_secondary is not None:
            if data.new_secondary not in state.desired.nodes:
                raise ApiError(
                    422, "invalid", f"no node named {data.new_secondary!r}", field="new_secondary"
                )
            params["node"] = data.new_secondary
    if isinstance(data, GrowDiskRequest):
        if not data.disk < len(spec.disks):
            raise ApiError(422, "invalid", f"disk must be 0..{len(spec.disks) - 1}", field="disk")
        params.update(disk=str(data.disk), amount_mib=str(data.amount_mib))
    return await _accepted(
        request,
        ctx,
        submit_job(
            ctx.store,
            state,
            kind=INSTANCE_VERBS[action],
            target=spec.name,
            params=params,
            actor=principal.name,
            reason=data.reason,
        ),
        what=f"instance {action} {spec.name}",
    )


async def instance_modify(request: web.Request) -> web.Response:
    """Memory and vCPUs of an instance (`corral instance modify`): admin only, as
    it changes the desired state; 422 naming the field when it does not fit."""
    principal, ctx, state, spec = _instance_of(request, Action.ADMIN, verb="change")
    data = await body_of(request, ModifyRequest)
    return await _accepted(
        request,
        ctx,
        modify_instance(
            ctx.store,
            state,
            instance=spec.name,
            memory_mib=data.memory_mib,
            vcpus=data.vcpus,
            force=data.force,
            actor=principal.name,
            reason=data.reason,
        ),
        what=f"instance modify {spec.name}",
    )


async def instance_rename(request: web.Request) -> web.Response:
    """Rename a stopped instance (`corral instance rename`): admin only, as it
    changes the desired state; 422 naming `new_name` when it cannot be done."""
    principal, ctx, state, spec = _instance_of(request, Action.ADMIN, verb="rename")
    data = await body_of(request, RenameRequest)
    return await _accepted(
        request,
        ctx,
        rename_instance(
            ctx.store,
            state,
            instance=spec.name,
            new_name=data.new_name,
            actor=principal.name,
            reason=data.reason,
        ),
        what=f"instance rename {spec.name}",
    )


async def instance_nics(request: web.Request) -> web.Response:
    """Replace an instance's NIC list (`corral instance nics`): admin only, as it
    changes the desired state; 422 naming the field (`nics[1].link`) when refused."""
    principal, ctx, state, spec = _instance_of(request, Action.ADMIN, verb="change")
    data = await body_of(request, NicsRequest)

    async def mutation() -> Accepted:
        new = nics_given(
            spec,
            [n.model_dump() for n in data.nics],
            taken=others_macs(state, spec.name),
            prefix=state.desired.policy.mac_prefix,
        )
        return await change_nics(
            ctx.store, state, new=new, actor=principal.name, reason=data.reason
        )

    return await _accepted(request, ctx, mutation(), what=f"instance nics {spec.name}")


async def instance_remove_disk(request: web.Request) -> web.Response:
    """Remove the last disk of a stopped instance (`corral instance remove-disk`):
    admin only, as it destroys the disk's data; 422 naming `disk` when refused."""
    principal, ctx, state, spec = _instance_of(request, Action.ADMIN, verb="change")
    data = await body_of(request, RemoveDiskRequest)
    return await _accepted(
        request,
        ctx,
        remove_disk(
            ctx.store,
            state,
            instance=spec.name,
            index=data.disk,
            actor=principal.name,
            reason=data.reason,
        ),
        what=f"instance remove-disk {spec.name}",
    )


# ---------------------------------------------------------------------- nodes


async def node_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in NODE_ACTIONS:
        raise ApiError(404, "not_found", f"no node action {action!r}", field="action")
    needed = Action.ADMIN if action == "confirm-off" else Action.NODE_OPERATE
    principal = require_role(request, needed)
    if not may(principal, needed):
        raise forbid(request, "a principal scoped to tags may not operate nodes")
    ctx = ctx_of(request)
    state = ctx.state()
    node = require_node(state, request.match_info["name"])
    reason = (await body_of(request, ReasonRequest)).reason
    mutation: Awaitable[Accepted]
    if action in NODE_FLAG_VERBS:
        mutation = set_node_flags(
            ctx.store,
            state,
            node=node,
            actor=principal.name,
            reason=reason,
            **NODE_FLAG_VERBS[action],
        )
    elif action == "confirm-off":
        mutation = confirm_node_off(
            ctx.store, state, node=node, actor=principal.name, reason=reason
        )
    else:
        mutation = submit_job(
            ctx.store,
            state,
            kind=NODE_JOB_VERBS[action],
            target=node,
            actor=principal.name,
            reason=reason,
        )
    return await _accepted(request, ctx, mutation, what=f"node {action} {node}")


# ---------------------------------------------------------------------- jobs


def _may_cancel(principal: Principal, tags: list[frozenset[str]]) -> bool:
    if not principal.scoped:
        return may(principal, Action.OPERATE)
    return any(may(principal, Action.OPERATE, instance_tags=t) for t in tags)


async def job_cancel(request: web.Request) -> web.Response:
    principal = require_role(request, Action.OPERATE)
    ctx = ctx_of(request)
    state = ctx.state()
    job_id = request.match_info["job_id"]
    job = state.jobs.get(JobId(job_id))
    if job is None or not visible_job(state, principal, job):
        raise ApiError(404, "not_found", f"no job {job_id!r}", field="job_id")
    if not _may_cancel(principal, job_instance_tags(state, job)):
        raise forbid(request, f"{principal.name} may not cancel job {job_id}")
    data = await body_of(request, ReasonRequest)
    return await _accepted(
        request,
        ctx,
        cancel_job(
            ctx.store,
            state,
            job_id=job.job_id,
            actor=principal.name,
            reason=data.reason,
        ),
        what=f"job cancel {job_id}",
    )


def add_write_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/desired/plan", desired_plan)
    app.router.add_post("/api/v1/desired/apply", desired_apply)
    app.router.add_post("/api/v1/instances/{name}/modify", instance_modify)
    app.router.add_post("/api/v1/instances/{name}/rename", instance_rename)
    app.router.add_post("/api/v1/instances/{name}/nics", instance_nics)
    app.router.add_post("/api/v1/instances/{name}/remove-disk", instance_remove_disk)
    app.router.add_post("/api/v1/instances/{name}/{action}", instance_action)
    app.router.add_post("/api/v1/nodes/{name}/{action}", node_action)
    app.router.add_post("/api/v1/jobs/{job_id}/cancel", job_cancel)
