"""Generic HTTP target: a pure request builder (render, sign) and one I/O call (send, classify)."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from typing import Literal

import aiohttp
import yarl
from pydantic import Field, field_validator

from relay import __version__
from relay.errors import RenderError
from relay.events import Delivered, Delivery, Failed, Outcome, Retry, template_context
from relay.fields import SENSITIVE_HEADER, Duration, HeaderName, error
from relay.ratelimit import Limiter
from relay.render import CompiledTemplate
from relay.retry import RetryPolicy, classify_status, gone_as
from relay.shared_config import BodyTargetModel, OnGone, RetryConfig, SignConfig
from relay.signing import HeaderSigner, build_signer
from relay.targets.base import (
    BodyRenderer,
    OutboundRequest,
    Resources,
    body_renderer,
    check_json,
    is_json_content_type,
)
from relay.templatefields import HttpUrl, InlineTemplate
from relay.textsafety import header_value_problem


class HttpTargetConfig(BodyTargetModel):
    kind: Literal["http"]
    """An HTTP endpoint."""
    url: HttpUrl
    """http(s)://HOST/PATH; the path and query may hold template expressions, each value encoded as
    one segment or query value."""
    method: str = "POST"
    """The HTTP method."""
    headers: dict[HeaderName, InlineTemplate] = Field(default_factory=dict)
    """Headers to send; values are templates."""
    timeout: Duration = timedelta(seconds=10)
    """Time allowed for one attempt."""
    concurrency: int = Field(default=4, ge=1, le=1024)
    """Attempts in flight at once."""
    max_per_second: float | None = Field(default=None, gt=0)
    """Send at most this many requests a second (bursts wait in the store)."""
    sign: SignConfig | None = None
    """Sign each request: hmac-sha256 or standard-webhooks."""
    retry: RetryConfig = RetryConfig()
    """Retries with backoff, within max_elapsed."""
    on_gone: OnGone = "pause"
    """What a 410 Gone answer does: pause the target, keeping its deliveries until `relay
    targets resume`, or make that delivery dead."""

    @field_validator("method")
    @classmethod
    def _upper(cls, method: str) -> str:
        if not re.fullmatch(r"[A-Za-z]+", method):
            raise error("method", f'invalid HTTP method "{method}"')
        return method.upper()

    def credentials(self) -> Iterator[str]:
        if self.sign is not None:
            yield self.sign.secret.get_secret_value()
        for name, value in self.headers.items():
            if SENSITIVE_HEADER.search(name):
                yield value.source


log = logging.getLogger("relay.targets")

USER_AGENT = f"relay/{__version__}"
ERROR_SNIPPET_CHARS = 200


def message_id(delivery: Delivery) -> str:
    """Stable across retries and replays of one (event, target): the receiver's dedup key."""
    key = f"{delivery.event.source}\0{delivery.event.id}\0{delivery.target}".encode()
    return "msg_" + hashlib.sha256(key).hexdigest()[:32]


BodyCheck = Callable[[bytes], bytes]  # checks (and may fix) a rendered body; raises RenderError
Classifier = Callable[[int, str, str | None, float], Outcome]  # status, text, Retry-After, now


class HttpRequestBuilder:
    """Pure: a delivery becomes the exact request to send (rendered, checked, signed)."""

    def __init__(
        self,
        target_name: str,
        method: str,
        origin: str,
        path: CompiledTemplate | str,
        headers: dict[str, CompiledTemplate],
        body: BodyRenderer,
        signer: HeaderSigner | None,
        check_body: BodyCheck | None = None,
    ) -> None:
        self.target_name = target_name
        self.method = method
        self._origin = wire_origin(origin)
        self._path = path
        self._headers = headers
        self._body = body
        self._signer = signer
        self._check_body = check_body
        # Without a template the context is not built: its dates and header copy cost
        # microseconds on every delivery.
        self._templated = not isinstance(path, str) or bool(headers) or body.template is not None

    def build(self, delivery: Delivery, now: float) -> OutboundRequest:
        """Render url, headers and body; check JSON; sign. Raises RenderError."""
        context = template_context(delivery.event, self.target_name) if self._templated else {}
        path = self._path if isinstance(self._path, str) else self._path.render(context)
        headers = {name: value.render(context) for name, value in self._headers.items()}
        body = self._body.render(delivery.event, context)
        content_type = _get(headers, "content-type") if headers else None
        if content_type is None:
            headers["Content-Type"] = content_type = "application/json"
        if self._body.template is not None and is_json_content_type(content_type):
            check_json(body, self._body.template.name)
        if self._check_body is not None:
            body = self._check_body(body)
        headers["Relay-Event-Id"] = delivery.event.id
        self._check_headers(headers)
        headers["Relay-Attempt"] = str(delivery.attempt)
        headers.setdefault("User-Agent", USER_AGENT)
        if self._signer is not None:
            headers.update(self._signer(body, message_id(delivery), int(now)))
        return OutboundRequest(self.method, self._origin + path, headers, body)

    def _check_headers(self, headers: dict[str, str]) -> None:
        """A value holding CR, LF or NUL would split the request: fail, never send or retry."""
        for name, value in headers.items():
            problem = header_value_problem(value)
            if problem is not None:
                raise RenderError(f"targets.{self.target_name}: header {name}: the value {problem}")


def wire_origin(origin: str) -> str:
    """The origin as it goes on the wire (an IDN host in punycode): the path and query are
    sent exactly as rendered, so the origin in front of them must already be encoded."""
    return str(yarl.URL(origin))


def _get(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


class HttpTarget:
    def __init__(
        self,
        name: str,
        builder: HttpRequestBuilder,
        session: aiohttp.ClientSession,
        timeout_s: float,
        concurrency: int,
        policy: RetryPolicy,
        clock: Callable[[], float],
        limiter: Limiter | None = None,
        classify: Classifier | None = None,
    ) -> None:
        self.name = name
        self.builder = builder
        self.concurrency = concurrency
        self.policy = policy
        # A claimed delivery may wait for every slot the limiter has promised before its own.
        wait_s = limiter.interval_s * concurrency if limiter is not None else 0.0
        self.lease_s = timeout_s + wait_s + 30.0
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._clock = clock
        self._limiter = limiter
        self._classify = classify or classify_http

    def preview(self, delivery: Delivery, now: float) -> OutboundRequest:
        return self.builder.build(delivery, now)

    async def send(self, delivery: Delivery) -> Outcome:
        try:
            request = self.builder.build(delivery, self._clock())
        except RenderError as exc:
            return Failed(str(exc))
        except Exception as exc:  # building is pure: it would fail the same way every time
            log.exception(
                "target %s: event %s: cannot build the request", self.name, delivery.event.id
            )
            return Failed(f"targets.{self.name}: cannot build the request: {exc!r}")
        if self._limiter is not None:
            await self._limiter.acquire()
        started = time.perf_counter()
        try:
            async with self._session.request(
                request.method,
                yarl.URL(request.url, encoded=True),  # as rendered: no re-quoting, no `..` resolved
                headers=request.headers,
                data=request.body,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                text = await response.text(errors="replace")
                retry_after = response.headers.get("Retry-After")
                outcome = self._classify(response.status, text, retry_after, self._clock())
                took_s = time.perf_counter() - started
                return with_exchange(outcome, took_s, text, retry_after)
        except TimeoutError:
            took_s = time.perf_counter() - started
            return Retry(f"timed out after {self._timeout_s:g}s", duration_s=took_s)
        except aiohttp.ClientError as exc:
            took_s = time.perf_counter() - started
            return Retry(f"connection error: {exc or type(exc).__name__}", duration_s=took_s)

    async def close(self) -> None:
        return None


def with_exchange(
    outcome: Outcome, duration_s: float, response: str, retry_after: str | None
) -> Outcome:
    """`outcome` with what the history keeps of the exchange. A delivery, the common case, is
    built directly: `dataclasses.replace` reads the fields' definitions on every call."""
    if type(outcome) is Delivered:
        return Delivered(outcome.status, duration_s, response, retry_after)
    return replace(outcome, duration_s=duration_s, response=response, retry_after=retry_after)


def classify_http(
    status: int, text: str, retry_after: str | None, now: float, on_gone: OnGone = "pause"
) -> Outcome:
    """The generic rule, with the start of the answer in the reason a person reads."""
    outcome = classify_status(status, retry_after, now)
    if isinstance(outcome, Delivered):
        return outcome
    snippet = " ".join(text.split())[:ERROR_SNIPPET_CHARS]
    if snippet:
        outcome = replace(outcome, reason=f"{outcome.reason}: {snippet}")
    return gone_as(outcome, on_gone)


@dataclass(frozen=True, slots=True)
class HttpPlan:
    """A compiled http (or Slack) target."""

    builder: HttpRequestBuilder
    timeout_s: float
    concurrency: int
    policy: RetryPolicy
    max_per_second: float | None
    classify: Classifier = classify_http

    @property
    def name(self) -> str:
        return self.builder.target_name

    def preview(self, delivery: Delivery, now: float) -> OutboundRequest:
        return self.builder.build(delivery, now)

    def bind(self, resources: Resources) -> HttpTarget:
        limiter = (
            resources.limiter(self.name, self.max_per_second)
            if self.max_per_second is not None
            else None
        )
        return HttpTarget(
            self.name,
            self.builder,
            resources.session,
            self.timeout_s,
            self.concurrency,
            self.policy,
            resources.clock,
            limiter,
            self.classify,
        )


def plan_http_target(name: str, target: HttpTargetConfig) -> HttpPlan:
    where = f"targets.{name}"
    path = target.url.path
    if not isinstance(path, str):
        path = path.named(f"{where}.url")
    headers = {
        header: value.named(f"{where}.headers.{header}") for header, value in target.headers.items()
    }
    body = body_renderer(target.body, target.template, where)
    signer = build_signer(target.sign) if target.sign is not None else None
    builder = HttpRequestBuilder(
        name, target.method, target.url.origin, path, headers, body, signer
    )
    return HttpPlan(
        builder,
        target.timeout.total_seconds(),
        target.concurrency,
        RetryPolicy.from_config(target.retry),
        target.max_per_second,
        partial(classify_http, on_gone=target.on_gone),
    )
