"""The admin JSON API: each endpoint is one async function and one line in ENDPOINTS.

An endpoint takes a `Call` (the daemon, its parameters validated, the request) and returns a
JSON object; it refuses with `InboundError(reason, status)`. Its parameters, from the path
(`/api/deliveries/{id}`) and the query string, are a closed model (a `Params` subclass): an
unknown, repeated or invalid one is answered 400 naming it, before the function runs. A
StoreError is answered 503, anything else 500 (logged with its traceback); every answer is
JSON. The admin listener (`relay.admin`) serves the ENDPOINTS of `relay.endpoints` behind its
token check. To add one there:

    class TargetName(Params):
        name: str

    async def show_target(call: Call[TargetName]) -> JsonObject:
        return {"name": call.params.name, ...}

    Endpoint("GET", "/api/targets/{name}", show_target, TargetName),  # in ENDPOINTS
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from aiohttp import web
from pydantic import ValidationError, field_validator
from pydantic_core import ErrorDetails

from relay.app import Daemon
from relay.errors import InboundError, StoreError
from relay.fields import Model
from relay.inbound import error_response
from relay.textsafety import unprintable_problem

log = logging.getLogger("relay.admin")

JsonObject = dict[str, Any]
MAX_NAME_CHARS = 64  # of a parameter name quoted back in an error


class Params(Model):
    """An endpoint's parameters (closed: none unless a subclass declares them); path and
    query values arrive as strings and are converted to the declared types.

    Every value must be printable text: values reach filters, the store (PostgreSQL's text
    cannot hold NUL) and pages, and a control character in one is never meant."""

    @field_validator("*", mode="before")
    @classmethod
    def _printable(cls, value: object) -> object:
        problem = unprintable_problem(value) if isinstance(value, str) else None
        if problem is not None:
            raise ValueError(problem)
        return value


P = TypeVar("P", bound=Params)


@dataclass(frozen=True, slots=True)
class Call(Generic[P]):
    daemon: Daemon
    params: P
    request: web.Request  # for what params do not carry, such as a body


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[P]):
    method: str
    path: str  # an aiohttp route path: `{name}` segments become parameters
    answer: Callable[[Call[P]], Awaitable[JsonObject]]
    params: type[P]

    def handler(self, daemon: Daemon) -> Callable[[web.Request], Awaitable[web.Response]]:
        """The aiohttp handler: parameters checked, the answer or the refusal as JSON."""

        async def handle(request: web.Request) -> web.Response:
            try:
                params = parse_params(self.params, request.match_info, request.query.items())
                answer = await self.answer(Call(daemon, params, request))
            except InboundError as exc:
                return error_response(exc.status, exc.reason)
            except StoreError as exc:
                log.error("admin API %s %s: %s", request.method, self.path, exc)
                return error_response(503, f"the store cannot answer right now: {exc}")
            except Exception:  # a bug: answered as JSON, logged once with its traceback
                log.exception("admin API %s %s: unexpected error", request.method, self.path)
                return error_response(500, "relay failed to answer this request; see its log")
            return json_answer(answer)

        return handle


def parse_params(model: type[P], path: Mapping[str, str], query: Iterable[tuple[str, str]]) -> P:
    """The path's and the query's parameters as `model`; InboundError (400) naming each
    problem. Values are not quoted back: the caller has them."""
    given = dict(path)
    for name, value in query:
        if name in given:
            raise InboundError(f"parameter {_clip(name)} is given more than once")
        given[name] = value
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        problems = [_problem(error, model) for error in exc.errors()]
        raise InboundError("; ".join(problems)) from None


def _problem(error: ErrorDetails, model: type[Params]) -> str:
    name = _clip(".".join(str(part) for part in error["loc"]))
    if error["type"] == "extra_forbidden":
        takes = ", ".join(model.model_fields) or "none"
        return f"unknown parameter {name} (this endpoint takes: {takes})"
    return f"parameter {name}: {error['msg'].replace('Input should be', 'must be', 1)}"


def _clip(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else f"{name[:MAX_NAME_CHARS]}..."


def json_answer(answer: JsonObject, status: int = 200) -> web.Response:
    return web.Response(body=_json_bytes(answer), status=status, content_type="application/json")


def _json_bytes(value: JsonObject) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # text orjson cannot encode as UTF-8 (a lone surrogate): \u-escaped
        return json.dumps(value).encode()
