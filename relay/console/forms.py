"""The small pieces every console handler shares: form and query values, where to go next,
and the 303 after an action."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from aiohttp import hdrs, web

from relay.api import parse_params
from relay.console.session import SESSION_COOKIE, SESSION_TTL_S
from relay.endpoints import DeliveryId


def see_other(location: str) -> web.Response:
    """303: after a POST, the browser GETs the page that says what was done."""
    return web.Response(status=303, headers={hdrs.LOCATION: location})


def given(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A form's fields without the empty ones (a filter left at "any")."""
    return {name: value for name, value in items if value.strip()}


def text_of(value: object) -> str:
    """A form field's text (a file upload, which no console form has, reads as empty)."""
    return value if isinstance(value, str) else ""


def local_path(path: str | None) -> str:
    """Where to go after signing in: a path of this console, never another site."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def path_delivery_id(request: web.Request) -> int:
    """The delivery id in the path; InboundError (400) when it is not one."""
    return parse_params(DeliveryId, request.match_info, []).id


def epoch_of(moment: datetime | None) -> float | None:
    """A form's date and time, read as UTC unless it names its zone."""
    if moment is None:
        return None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def set_session_cookie(request: web.Request, response: web.StreamResponse, cookie: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
        max_age=int(SESSION_TTL_S),
    )
