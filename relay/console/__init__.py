"""The web console on the admin listener: pages for operators over the admin API.

`routes` holds the pages and actions, `session` the sign-in and CSRF checks, `headers` the
response headers that keep pages inert, `views` the pure shaping of what pages show, and
`templating` the Jinja environment (autoescaped) with the templates and the two assets
(`static/console.css`, `static/console.js`) shipped in this package: no CDN, no build step.
"""

from __future__ import annotations

from collections.abc import Set

from aiohttp import web

from relay.app import Daemon
from relay.console.headers import add_security_headers
from relay.console.routes import Console


def add_console(app: web.Application, daemon: Daemon, public_paths: Set[str]) -> Console:
    """Serve the console from `app` (before it starts): its routes, its session guard (after
    the admin token's, which keeps `/api/` for bearer tokens) and its headers."""
    console = Console(daemon, public_paths)
    app.add_routes(console.routes())
    app.middlewares.append(console.guard)
    app.on_response_prepare.append(add_security_headers)
    return console
