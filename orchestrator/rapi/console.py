"""Ganeti RAPI v2 `GET /2/instances/NAME/console` (`GetInstanceConsole`): where the
instance's VNC display is, in the shape of Ganeti's InstanceConsole of kind `vnc`
(`instance`, `kind`, `host`, `port`, `display`). The display listens on the primary
node's loopback only, so `host` is that node's address and a viewer reaches `port`
through an SSH forward (`ssh -L PORT:127.0.0.1:PORT NODE`, or `corral instance
console NAME --vnc`, which makes the forward). As in Ganeti, it needs the right to
operate the instance (a project owner's scoped user may, for its own instances), and
an instance that is not running has no console (400).

Must not run node commands.
"""

from __future__ import annotations

from aiohttp import web

from events.ids import InstanceName
from orchestrator.rapi.context import Rapi, RapiError, reply
from orchestrator.roles import Action
from reactors.naming import VNC_BASE_PORT, vnc_display
from reactors.plans.queries import vm_alive, vm_on


class ConsoleRoutes:
    def __init__(self, r: Rapi) -> None:
        self.r = r

    async def console(self, request: web.Request) -> web.Response:
        state = self.r.state()
        spec = self.r.instance(request, request.match_info["name"], state=state)
        self.r.require(request, Action.OPERATE, instance_tags=spec.tags)
        name = InstanceName(spec.name)
        placement = state.placements[name]
        if not vm_alive(vm_on(state.observed.get(placement.primary), name)):
            raise RapiError(400, f"instance {name} is not running: it has no console")
        display = vnc_display(placement.disks[0].minor) if placement.disks else None
        if display is None:
            raise RapiError(400, f"instance {name} has no VNC display")
        node = state.desired.nodes[placement.primary]
        return reply(
            {
                "instance": name,
                "kind": "vnc",
                "host": node.address,
                "port": VNC_BASE_PORT + display,
                "display": display,
            }
        )

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/2/instances/{name}/console", self.console)]


def console_routes(r: Rapi) -> list[web.RouteDef]:
    return ConsoleRoutes(r).routes()
