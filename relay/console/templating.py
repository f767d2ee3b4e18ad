"""The console's Jinja environment and its two assets, read once when the admin app is built.

Autoescape is on for every template: event data is attacker-controlled, and it reaches the
pages only as escaped text.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from relay.console.views import relative, utc_text

PACKAGE = "relay.console"
ASSETS = {"console.css": "text/css", "console.js": "text/javascript"}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(PACKAGE, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ago"] = relative
    env.filters["utc"] = utc_text
    env.filters["segment"] = lambda text: quote(str(text), safe="")  # one path segment
    return env


def assets() -> dict[str, bytes]:
    folder = resources.files(PACKAGE) / "static"
    return {name: (folder / name).read_bytes() for name in ASSETS}


def html(env: jinja2.Environment, name: str, context: dict[str, Any], status: int) -> web.Response:
    response = web.Response(
        text=env.get_template(name).render(context), status=status, content_type="text/html"
    )
    response.headers["Cache-Control"] = "no-store"  # pages show event data: keep no copies
    return response
