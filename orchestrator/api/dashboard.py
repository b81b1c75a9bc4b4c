"""The web dashboard: serves the static page, script and style from
`orchestrator/api/dashboard_static/` at `/` and `/dashboard/...`. The page itself talks to
the native API with the user's token (no server-side sessions, no build step).

Must not expose anything but those three files, and never a directory listing.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

DASHBOARD_DIR = Path(__file__).parent / "dashboard_static"
_FILES = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}


def _file(name: str) -> web.Response:
    body = (DASHBOARD_DIR / name).read_bytes()
    return web.Response(
        body=body,
        content_type=_FILES[name],
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
        },
    )


async def index(request: web.Request) -> web.Response:
    return _file("index.html")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _FILES:
        raise web.HTTPNotFound()
    return _file(name)


def add_dashboard_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/dashboard/{name}", asset)
