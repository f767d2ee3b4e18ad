"""The config file as validated, closed models (loaded by `relay.loading.load_config`).

The top-level keys mirror the architecture: `sources` (inbound), `routes`, `targets`
(outbound), `store`. Models are closed and typed. A `verify` is one of the schemes registered
in `relay.sources`, a target one of the kinds registered in `relay.targets`: each kind's model
lives in its own module, and the unions tagged by `scheme` and `kind` are built from there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from relay.addresses import parse_listen
from relay.fields import NUL_IN_PATH, Duration, Model, Networks, error
from relay.sources import GENERIC, SENDER_OF_SCHEME, SENDERS, VerifyConfig
from relay.store.url import parse_store_url
from relay.targets import TargetConfig
from relay.templatefields import JinjaExpression

RESERVED_PATHS = frozenset({"/healthz", "/metrics"})


class SourceConfig(Model):
    path: str
    verify: VerifyConfig | None = None
    sender: str | None = None  # read as this sender does (default: as `verify` says)
    allow_ips: Networks | None = None
    trusted_proxies: Networks = Field(default_factory=list)

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
    types: list[str] | None = None
    when: JinjaExpression | None = None
    targets: list[str]

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
    read_timeout: Duration = timedelta(seconds=15)  # a request's head and body, from its first byte
    idle_timeout: Duration = timedelta(seconds=75)  # a keep-alive connection with no request
    max_connections: int = Field(default=1000, ge=1, le=1_000_000)


class RetentionConfig(Model):
    """How long an event stays in the store once its deliveries are delivered, or dead."""

    delivered: Duration = timedelta(days=7)
    dead: Duration = timedelta(days=30)


class Config(Model):
    listen: str = "127.0.0.1:8080"
    store: str = "sqlite:///var/relay.db"
    retention: RetentionConfig = RetentionConfig()
    limits: LimitsConfig = LimitsConfig()
    templates_dir: str = "templates"
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
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
