"""Ganeti RAPI v2 cluster, node and group routes: `/`, `/version`, `/2/features`,
`/2/info`, `/2/os`, `/2/tags`, `/2/nodes/...` (role, evacuate, migrate, tags) and
`/2/groups/...`.

Must not run node commands or wait for convergence; mutations go through
`orchestrator.operations` or append desired-state events with expected versions.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from events.ids import NodeName
from events.model import JobKind
from events.state import ClusterState
from orchestrator.operations import OperationRefused, set_node_flags
from orchestrator.rapi import views
from orchestrator.rapi.context import FEATURES, Rapi, RapiError, refused_error, reply
from orchestrator.rapi.job_index import ChangeRecord
from orchestrator.roles import Action


def cluster_routes(r: Rapi) -> list[web.RouteDef]:
    async def root(_: web.Request) -> web.Response:
        return reply(None)

    async def version(_: web.Request) -> web.Response:
        return reply(2)

    async def features(_: web.Request) -> web.Response:
        return reply(list(FEATURES))

    async def info(_: web.Request) -> web.Response:
        state = r.state()
        return reply(views.info(state, bc=views.htools_view(state)))

    async def os_list(_: web.Request) -> web.Response:
        state = r.state()
        return reply(sorted({s.os for s in state.desired.instances.values()} | {"none"}))

    async def tags_get(_: web.Request) -> web.Response:
        return reply(views.cluster_tags(views.htools_view(r.state())))

    async def tags_change(request: web.Request) -> web.Response:
        r.require(request, Action.ADMIN)
        raise RapiError(
            501,
            "cluster tags are derived from the cluster policy "
            "(exclusion_tag_prefixes, failure_domain_prefixes); change them in the "
            "desired-state file",
        )

    return [
        web.get("/", root),
        web.get("/2", root),
        web.get("/version", version),
        web.get("/2/features", features),
        web.get("/2/info", info),
        web.get("/2/os", os_list),
        web.get("/2/tags", tags_get),
        web.put("/2/tags", tags_change),
        web.delete("/2/tags", tags_change),
    ]


_ROLE_FLAGS: dict[str, tuple[bool | None, bool | None]] = {
    # role -> (drained, offline)
    "drained": (True, None),
    "offline": (None, True),
    "regular": (False, False),
}


def node_routes(r: Rapi) -> list[web.RouteDef]:
    async def nodes(request: web.Request) -> web.Response:
        state = r.state()
        if not r.flag(request, "bulk"):
            return reply([{"id": n, "uri": f"/2/nodes/{n}"} for n in sorted(state.desired.nodes)])
        return reply([_node(request, state, n) for n in sorted(state.desired.nodes)])

    def _node(request: web.Request, state: ClusterState, name: NodeName) -> dict[str, Any]:
        who = r.principal(request)
        visible = views.listed_instances(state, who) if who.scoped else None
        return views.node(state, name, bc=views.htools_view(state), visible=visible)

    async def one(request: web.Request) -> web.Response:
        state = r.state()
        spec = r.node(request.match_info["node"], state=state)
        return reply(_node(request, state, spec.name))

    async def role_get(request: web.Request) -> web.Response:
        state = r.state()
        spec = r.node(request.match_info["node"], state=state)
        return reply(views.ROLE_WORDS[views.node_role(state, spec.name)])

    async def role_put(request: web.Request) -> web.Response:
        who = r.require(request, Action.NODE_OPERATE)
        r.no_dry_run(request)
        spec = r.node(request.match_info["node"])
        role = await r.body(request)
        if not isinstance(role, str):
            raise RapiError(400, "the body must be a JSON string: drained, offline or regular")
        if role not in _ROLE_FLAGS:
            raise RapiError(
                400,
                f"Can't set {role!r} role: corral nodes are drained, offline or regular "
                "(there are no master candidates)",
            )
        drained, offline = _ROLE_FLAGS[role]
        try:
            accepted = await set_node_flags(
                r.store,
                r.state(),
                node=spec.name,
                drained=drained,
                offline=offline,
                actor=who.name,
                reason=r.reason(request, f"role {role} set through RAPI"),
            )
        except OperationRefused as exc:
            raise refused_error(exc) from None
        return await r.recorded_change(
            ChangeRecord(
                revision=accepted.revision,
                kind="node.role",
                target=spec.name,
                actor=who.name,
                time=r.clock(),
                detail=f"role {role}",
            )
        )

    async def evacuate(request: web.Request) -> web.Response:
        who = r.require(request, Action.NODE_OPERATE)
        r.no_dry_run(request)
        state = r.state()
        spec = r.node(request.match_info["node"], state=state)
        body = await r.body_dict(request)
        if body.get("remote_node"):
            raise RapiError(400, "remote_node is not supported: corral's allocator picks")
        mode = body.get("mode") or "all"
        primaries = any(p.primary == spec.name for p in state.placements.values())
        if mode == "all":
            kind = JobKind.NODE_EVACUATE
        elif mode == "primary-only":
            kind = JobKind.NODE_MIGRATE
        elif mode == "secondary-only" and not primaries:
            kind = JobKind.NODE_EVACUATE  # with no primaries, that is all it moves
        elif mode == "secondary-only":
            raise RapiError(
                400,
                f"{spec.name} still holds primaries; corral evacuates secondaries together "
                "with primaries (mode all) or after them",
            )
        else:
            raise RapiError(400, f"unknown evacuation mode {mode!r}")
        return await r.submit(
            request, kind=kind, target=spec.name, who=who, reason=f"evacuate ({mode}) via RAPI"
        )

    async def migrate(request: web.Request) -> web.Response:
        who = r.require(request, Action.NODE_OPERATE)
        r.no_dry_run(request)
        spec = r.node(request.match_info["node"])
        body = await r.body_dict(request)
        if body.get("target_node"):
            raise RapiError(
                400, "target_node is not supported: DRBD instances move to their secondary"
            )
        return await r.submit(
            request,
            kind=JobKind.NODE_MIGRATE,
            target=spec.name,
            who=who,
            reason="node migrate via RAPI",
        )

    async def tags(request: web.Request) -> web.Response:
        return reply(sorted(r.node(request.match_info["node"]).tags))

    async def groups(request: web.Request) -> web.Response:
        state = r.state()
        rows = views.groups(state, bc=views.htools_view(state))
        if r.flag(request, "bulk"):
            return reply(rows)
        return reply([{"name": g["name"], "uri": f"/2/groups/{g['name']}"} for g in rows])

    async def group(request: web.Request) -> web.Response:
        state = r.state()
        for g in views.groups(state, bc=views.htools_view(state)):
            if g["name"] == request.match_info["group"]:
                return reply(g)
        raise RapiError(404, f"group {request.match_info['group']!r} not found")

    return [
        web.get("/2/nodes", nodes),
        web.get("/2/nodes/{node}", one),
        web.get("/2/nodes/{node}/role", role_get),
        web.put("/2/nodes/{node}/role", role_put),
        web.post("/2/nodes/{node}/evacuate", evacuate),
        web.post("/2/nodes/{node}/migrate", migrate),
        web.get("/2/nodes/{node}/tags", tags),
        web.get("/2/groups", groups),
        web.get("/2/groups/{group}", group),
    ]
