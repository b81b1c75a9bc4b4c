"""Ganeti RAPI v2 cluster, node and group routes: `/`, `/version`, `/2/features`,
`/2/info`, `/2/os` (the applied catalogue's images and OS definitions), `/2/tags`,
`/2/nodes/...` (role, evacuate, migrate, tags) and `/2/groups/...`.

Must not run node commands or wait for convergence; mutations go through
`orchestrator.operations` or append desired-state events with expected versions.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from events.ids import NodeName
from events.model import JobKind
from events.state import ClusterState
from orchestrator.desired.images import NO_OS
from orchestrator.operations import OperationRefused, set_node_flags
from orchestrator.rapi import views
from orchestrator.rapi.context import FEATURES, Rapi, RapiError, refused_error, reply
from orchestrator.rapi.job_index import ChangeRecord
from orchestrator.reinstall import catalogue
from orchestrator.roles import Action


class ClusterRoutes:
    """`/`, `/version`, `/2/features`, `/2/info`, `/2/os`, `/2/tags`."""

    def __init__(self, r: Rapi) -> None:
        self.r = r

    async def root(self, _: web.Request) -> web.Response:
        return reply(None)

    async def version(self, _: web.Request) -> web.Response:
        return reply(2)

    async def features(self, _: web.Request) -> web.Response:
        return reply(list(FEATURES))

    async def info(self, _: web.Request) -> web.Response:
        state = self.r.state()
        return reply(views.info(state, bc=views.htools_view(state)))

    async def os_list(self, _: web.Request) -> web.Response:
        """What a create may name (Ganeti lists its valid OSes, a definition as
        NAME+VARIANT per variant): the last applied catalogue's images and OS
        definitions as declared, "none", and what instances use."""
        state = self.r.state()
        used = {s.os for s in state.desired.instances.values()}
        return reply(sorted(set(catalogue(state)) | used | {NO_OS}))

    async def tags_get(self, _: web.Request) -> web.Response:
        return reply(views.cluster_tags(views.htools_view(self.r.state())))

    async def tags_change(self, request: web.Request) -> web.Response:
        self.r.require(request, Action.ADMIN)
        raise RapiError(
            501,
            "cluster tags are derived from the cluster policy "
            "(exclusion_tag_prefixes, failure_domain_prefixes); change them in the "
            "desired-state file",
        )

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.root),
            web.get("/2", self.root),
            web.get("/version", self.version),
            web.get("/2/features", self.features),
            web.get("/2/info", self.info),
            web.get("/2/os", self.os_list),
            web.get("/2/tags", self.tags_get),
            web.put("/2/tags", self.tags_change),
            web.delete("/2/tags", self.tags_change),
        ]


def cluster_routes(r: Rapi) -> list[web.RouteDef]:
    return ClusterRoutes(r).routes()


_ROLE_FLAGS: dict[str, tuple[bool | None, bool | None]] = {
    # role -> (drained, offline)
    "drained": (True, None),
    "offline": (None, True),
    "regular": (False, False),
}


class NodeRoutes:
    """`/2/nodes/...` and `/2/groups/...`."""

    def __init__(self, r: Rapi) -> None:
        self.r = r

    async def nodes(self, request: web.Request) -> web.Response:
        state = self.r.state()
        if not self.r.flag(request, "bulk"):
            return reply([{"id": n, "uri": f"/2/nodes/{n}"} for n in sorted(state.desired.nodes)])
        return reply([self._node(request, state, n) for n in sorted(state.desired.nodes)])

    def _node(self, request: web.Request, state: ClusterState, name: NodeName) -> dict[str, Any]:
        who = self.r.principal(request)
        visible = views.listed_instances(state, who) if who.scoped else None
        return views.node(state, name, bc=views.htools_view(state), visible=visible)

    async def one(self, request: web.Request) -> web.Response:
        state = self.r.state()
        spec = self.r.node(request.match_info["node"], state=state)
        return reply(self._node(request, state, spec.name))

    async def role_get(self, request: web.Request) -> web.Response:
        state = self.r.state()
        spec = self.r.node(request.match_info["node"], state=state)
        return reply(views.ROLE_WORDS[views.node_role(state, spec.name)])

    async def role_put(self, request: web.Request) -> web.Response:
        who = self.r.require(request, Action.NODE_OPERATE)
        self.r.no_dry_run(request)
        spec = self.r.node(request.match_info["node"])
        role = await self.r.body(request)
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
                self.r.store,
                self.r.state(),
                node=spec.name,
                drained=drained,
                offline=offline,
                actor=who.name,
                reason=self.r.reason(request, f"role {role} set through RAPI"),
            )
        except OperationRefused as exc:
            raise refused_error(exc) from None
        return await self.r.recorded_change(
            ChangeRecord(
                revision=accepted.revision,
                kind="node.role",
                target=spec.name,
                actor=who.name,
                time=self.r.clock(),
                detail=f"role {role}",
            )
        )

    async def evacuate(self, request: web.Request) -> web.Response:
        who = self.r.require(request, Action.NODE_OPERATE)
        self.r.no_dry_run(request)
        state = self.r.state()
        spec = self.r.node(request.match_info["node"], state=state)
        body = await self.r.body_dict(request)
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
        return await self.r.submit(
            request, kind=kind, target=spec.name, who=who, reason=f"evacuate ({mode}) via RAPI"
        )

    async def migrate(self, request: web.Request) -> web.Response:
        who = self.r.require(request, Action.NODE_OPERATE)
        self.r.no_dry_run(request)
        spec = self.r.node(request.match_info["node"])
        body = await self.r.body_dict(request)
        if body.get("target_node"):
            raise RapiError(
                400, "target_node is not supported: DRBD instances move to their secondary"
            )
        return await self.r.submit(
            request,
            kind=JobKind.NODE_MIGRATE,
            target=spec.name,
            who=who,
            reason="node migrate via RAPI",
        )

    async def tags(self, request: web.Request) -> web.Response:
        return reply(sorted(self.r.node(request.match_info["node"]).tags))

    async def groups(self, request: web.Request) -> web.Response:
        state = self.r.state()
        rows = views.groups(state, bc=views.htools_view(state))
        if self.r.flag(request, "bulk"):
            return reply(rows)
        return reply([{"name": g["name"], "uri": f"/2/groups/{g['name']}"} for g in rows])

    async def group(self, request: web.Request) -> web.Response:
        state = self.r.state()
        for g in views.groups(state, bc=views.htools_view(state)):
            if g["name"] == request.match_info["group"]:
                return reply(g)
        raise RapiError(404, f"group {request.match_info['group']!r} not found")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/2/nodes", self.nodes),
            web.get("/2/nodes/{node}", self.one),
            web.get("/2/nodes/{node}/role", self.role_get),
            web.put("/2/nodes/{node}/role", self.role_put),
            web.post("/2/nodes/{node}/evacuate", self.evacuate),
            web.post("/2/nodes/{node}/migrate", self.migrate),
            web.get("/2/nodes/{node}/tags", self.tags),
            web.get("/2/groups", self.groups),
            web.get("/2/groups/{group}", self.group),
        ]


def node_routes(r: Rapi) -> list[web.RouteDef]:
    return NodeRoutes(r).routes()
