"""The config file as validated, closed models (loaded by `relay.loading.load_config`).

The top-level keys mirror the architecture: `sources` (inbound), `routes`, `targets`
(outbound), `store`. Models are closed and typed. A `verify` is one of the schemes registered
in `relay.sources`, a target one of the kinds registered in `relay.targets`: each kind's model
lives in its own module, and the unions tagged by `scheme` and `kind` are built from there.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from relay.addresses import parse_listen
from relay.fields import NUL_IN_PATH, Duration, Model, Networks, error
from relay.sources import GENERIC, SENDER_OF_SCHEME, SENDERS, VerifyConfig
from relay.store.url import parse_store_url
from relay.targets import TargetConfig
from relay.templatefields import JinjaExpression

RESERVED_PATHS = frozenset({"/healthz", "/metrics"})
SenderName = Annotated[str, WithJsonSchema({"type": "string", "enum": list(SENDERS)})]


class SourceConfig(Model):
    path: str
    """The URL path senders POST to, e.g. /hooks/flagright."""
    verify: VerifyConfig | None = None
    """How requests are authenticated (leave out to accept unsigned requests)."""
    sender: Annotated[str, WithJsonSchema({"type": "string", "enum": list(SENDERS)})] | None = (
        None  # read as this sender does (default: as `verify` says)
    )
    """Read events as this sender does (default: as verify.scheme says)."""
    allow_ips: Networks | None = None
    """Only these addresses, CIDRs or presets (flagright-production, flagright-sandbox) may post."""
    trusted_proxies: Networks = Field(default_factory=list)
    """Proxies (CIDRs) whose X-Forwarded-For is believed, right to left."""

    @property
    def reads_as(self) -> str:
        """The sender whose reader makes this source's events."""
        if self.sender is not None:
            return self.sender
        if self.verify is None:
            return GENERIC
        return SENDER_OF_SCHEME[self.verify.scheme]

    @field_validator("sender")
    @classmethod
    def _known_sender(cls, sender: str | None) -> str | None:
        if sender is not None and sender not in SENDERS:
            choices = ", ".join(SENDERS)
            raise error("sender", f'unknown sender "{sender}"; expected one of: {choices}')
        return sender

    @model_validator(mode="after")
    def _sender_matches_verify(self) -> SourceConfig:
        verified_as = SENDER_OF_SCHEME[self.verify.scheme] if self.verify is not None else None
        if self.sender is not None and verified_as not in (None, GENERIC, self.sender):
            scheme = self.verify.scheme if self.verify is not None else None
            raise error("sender", f"sender {self.sender} does not match verify.scheme {scheme}")
        return self

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise error("path", f'path must start with "/", got "{path}"')
        if re.search(r"[\s?#{}]", path):
            raise error("path", f'path "{path}" must not contain spaces, "?", "#", "{{" or "}}"')
        if path in RESERVED_PATHS:
            raise error("path", f'"{path}" is reserved by relay')
        return path


class RouteConfig(Model):
    sources: list[str] | None = None
    """Match events from these sources (default: every source)."""
    types: list[str] | None = None
    """Match event types by glob, e.g. CASE_* or flag:* (default: every type)."""
    when: JinjaExpression | None = None
    """Match only when this Jinja expression is true (an expression that fails does not match)."""
    targets: list[str]
    """Deliver matching events to these targets."""

    @field_validator("sources", "types")
    @classmethod
    def _not_empty(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is not None and not value:
            what = str(info.field_name).removesuffix("s")
            raise error("empty", f"must not be empty (leave it out to match every {what})")
        return value

    @field_validator("targets")
    @classmethod
    def _some_target(cls, value: list[str]) -> list[str]:
        if not value:
            raise error("empty", "must name at least one target")
        return value


class LimitsConfig(Model):
    """What one client may take from relay; README's Limits section says what exceeding gives."""

    max_body_bytes: int = Field(default=1_048_576, ge=1)  # counted after Content-Encoding
    """Largest body accepted (413 beyond), counted after gzip/deflate decoding."""
    read_timeout: Duration = timedelta(seconds=15)  # a request's head and body, from its first byte
    """A request's head and body must arrive within this, from its first byte (408 or the
    connection closed)."""
    idle_timeout: Duration = timedelta(seconds=75)  # a keep-alive connection with no request
    """A kept-alive connection with no request is closed after this."""
    max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    """Open connections at most; idle ones, then slow ones, make room for new ones."""


class RetentionConfig(Model):
    """How long an event stays in the store once its deliveries are delivered, or dead."""

    delivered: Duration = timedelta(days=7)
    """Purge an event this long after its last delivery was delivered (a repeat of its id
    afterwards is accepted as new)."""
    dead: Duration = timedelta(days=30)
    """Purge an event this long after its last dead delivery died (it can be replayed until
    then)."""


MIN_ADMIN_TOKEN_CHARS = 16
# RFC 6750's b64token: what a client can send after "Bearer " as it is.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _admin_token(token: SecretStr) -> SecretStr:
    """Never echoes the value: it is a credential."""
    text = token.get_secret_value()
    if len(text) < MIN_ADMIN_TOKEN_CHARS:
        raise error(
            "token",
            f"must be at least {MIN_ADMIN_TOKEN_CHARS} characters"
            f" (e.g. the output of `openssl rand -hex 32`), got {len(text)}",
        )
    if not _BEARER_TOKEN.fullmatch(text):
        raise error(
            "token",
            'must be letters, digits and - . _ ~ + / (then = at the end), as "Bearer" takes it',
        )
    return token


AdminToken = Annotated[SecretStr, AfterValidator(_admin_token)]


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (an IP address, or localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to any address


class AdminConfig(Model):
    """The admin listener: health, readiness, metrics and the JSON API, apart from ingest."""

    listen: str = "127.0.0.1:9090"
    """HOST:PORT the admin listener (/healthz, /readyz, /metrics, /api/) listens on."""
    token: AdminToken | None = Field(default=None, validate_default=True)
    """The admin API (/api/...) needs Authorization: Bearer TOKEN; e.g. ${RELAY_ADMIN_TOKEN}, at
    least 16 characters. Required unless listen is a loopback address."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        parse_listen(listen)
        return listen

    @field_validator("token", mode="after")
    @classmethod
    def _token_off_loopback(cls, token: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        listen = info.data.get("listen")  # absent when listen itself is invalid
        if token is None and isinstance(listen, str) and not is_loopback(parse_listen(listen)[0]):
            raise error(
                "token",
                f'admin.listen "{listen}" is reachable from other machines: set a token'
                " (token: ${RELAY_ADMIN_TOKEN}) or listen on a loopback address (127.0.0.1)",
            )
        return token


class Config(Model):
    listen: str = "127.0.0.1:8080"
    """HOST:PORT the ingest server listens on."""
    admin: AdminConfig = AdminConfig()
    """The admin listener (health, readiness, metrics, the JSON API), on a port of its own."""
    store: str = "sqlite:///var/relay.db"
    """Where relay keeps events and deliveries: sqlite:///PATH (relative to this file), with
    ?synchronous=normal|full and ?busy_timeout=5s; or postgresql://USER@HOST:PORT/DATABASE
    (the password from ${VAR}), with ?sslmode=... and ?schema=NAME, which replicas share."""
    retention: RetentionConfig = RetentionConfig()
    """How long settled events stay in the store."""
    limits: LimitsConfig = LimitsConfig()
    """What one client may take from relay: body size, time to send a request, connections."""
    templates_dir: str = "templates"
    """Folder of template files (relative to this file)."""
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    """Where senders post events, by name."""
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    """Where events are delivered, by name."""
    routes: list[RouteConfig] = Field(default_factory=list)
    """Which events go to which targets: an event goes to the union of the targets of every route
    it matches."""
    # Values of `${VAR}` references in credential-bearing fields (headers, urls, secrets,
    # store), which the loader records so that logs and stored errors never show them.
    _credentials_from_env: tuple[str, ...] = PrivateAttr(default=())

    @property
    def credentials_from_env(self) -> tuple[str, ...]:
        return self._credentials_from_env

    def set_credentials_from_env(self, values: Iterable[str]) -> None:
        self._credentials_from_env = tuple(dict.fromkeys(values))

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        parse_listen(listen)
        return listen

    @field_validator("store")
    @classmethod
    def _store(cls, store: str) -> str:
        try:
            parse_store_url(store)
        except ValueError as exc:
            raise error("store", str(exc)) from None
        return store

    @field_validator("templates_dir")
    @classmethod
    def _templates_dir(cls, templates_dir: str) -> str:
        if "\0" in templates_dir:
            raise error("templates_dir", NUL_IN_PATH)
        return templates_dir
