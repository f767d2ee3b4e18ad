"""The config file as validated, closed models (loaded by `relay.loading.load_config`).

The top-level keys mirror the architecture: `sources` (inbound), `routes`, `targets`
(outbound), `store`. Models are closed and typed; targets are a union tagged by `kind`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from relay.addresses import check_url_origin, parse_listen
from relay.fields import (
    Duration,
    HeaderName,
    Identifier,
    Model,
    Networks,
    Secret,
    Secrets,
    WhsecSecret,
    WhsecSecrets,
    error,
    table_name,
)
from relay.store.url import parse_store_url
from relay.templatefields import HttpUrl, InlineTemplate, JinjaExpression, TemplateFile

RESERVED_PATHS = frozenset({"/healthz", "/metrics"})
TARGET_KINDS = ("http", "slack", "warehouse", "console")
SIGN_SCHEMES = ("hmac-sha256", "standard-webhooks")
NUL_IN_PATH = "a file path cannot contain a NUL character (\\0)"


class HmacVerifyConfig(Model):
    """Generic HMAC-SHA256 of the raw body, sent in one header."""

    scheme: Literal["hmac-sha256"]
    secret: Secrets
    header: HeaderName
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""


class FlagrightVerifyConfig(Model):
    scheme: Literal["flagright"]
    secret: Secrets


class FlagsmithVerifyConfig(Model):
    scheme: Literal["flagsmith"]
    secret: Secrets


class FliptVerifyConfig(Model):
    scheme: Literal["flipt"]
    secret: Secrets


class StandardWebhooksVerifyConfig(Model):
    scheme: Literal["standard-webhooks"]
    secret: WhsecSecrets
    tolerance: Duration = timedelta(minutes=5)


VerifyConfig = Annotated[
    HmacVerifyConfig
    | FlagrightVerifyConfig
    | FlagsmithVerifyConfig
    | FliptVerifyConfig
    | StandardWebhooksVerifyConfig,
    Field(discriminator="scheme"),
]
VERIFY_SCHEMES = ("hmac-sha256", "flagright", "flagsmith", "flipt", "standard-webhooks")


class SourceConfig(Model):
    path: str
    verify: VerifyConfig | None = None
    sender: Literal["generic", "flagright", "flagsmith", "flipt", "standard-webhooks"] | None = None
    allow_ips: Networks | None = None
    trusted_proxies: Networks = Field(default_factory=list)

    @property
    def reads_as(self) -> str:
        if self.sender is not None:
            return self.sender
        if self.verify is None or self.verify.scheme == "hmac-sha256":
            return "generic"
        return self.verify.scheme

    @model_validator(mode="after")
    def _sender_matches_verify(self) -> SourceConfig:
        scheme = self.verify.scheme if self.verify is not None else None
        if self.sender is not None and scheme not in (None, "hmac-sha256", self.sender):
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


class RetryConfig(Model):
    initial: Duration = timedelta(milliseconds=500)
    multiplier: float = Field(default=2.0, ge=1.0)
    max_interval: Duration = timedelta(minutes=10)
    max_elapsed: Duration = timedelta(hours=24)
    max_attempts: int | None = Field(default=None, ge=1)


class HmacSignConfig(Model):
    scheme: Literal["hmac-sha256"]
    secret: Secret
    header: HeaderName = "Relay-Signature"


class StandardWebhooksSignConfig(Model):
    scheme: Literal["standard-webhooks"]
    secret: WhsecSecret


SignConfig = Annotated[HmacSignConfig | StandardWebhooksSignConfig, Field(discriminator="scheme")]


class _BodyConfig(Model):
    body: InlineTemplate | None = None
    template: TemplateFile | None = None

    @field_validator("template", mode="before")
    @classmethod
    def _one_body_source(cls, template: object, info: ValidationInfo) -> object:
        if template is not None and info.data.get("body") is not None:
            raise error("body", "set body or template, not both")
        return template


class HttpTargetConfig(_BodyConfig):
    kind: Literal["http"]
    url: HttpUrl
    method: str = "POST"
    headers: dict[HeaderName, InlineTemplate] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    concurrency: int = Field(default=4, ge=1, le=1024)
    max_per_second: float | None = Field(default=None, gt=0)
    sign: SignConfig | None = None
    retry: RetryConfig = RetryConfig()

    @field_validator("method")
    @classmethod
    def _upper(cls, method: str) -> str:
        if not re.fullmatch(r"[A-Za-z]+", method):
            raise error("method", f'invalid HTTP method "{method}"')
        return method.upper()


class SlackTargetConfig(_BodyConfig):
    """A Slack incoming webhook; the template renders the message JSON."""

    kind: Literal["slack"]
    url: str
    timeout: Duration = timedelta(seconds=10)
    max_per_second: float = Field(default=1.0, gt=0)  # Slack's documented limit
    retry: RetryConfig = RetryConfig()

    @field_validator("url")
    @classmethod
    def _fixed_url(cls, url: str) -> str:
        check_url_origin(url)
        if "{{" in url or "{%" in url:
            raise error("url", "a Slack webhook url cannot contain template expressions")
        return url

    @model_validator(mode="after")
    def _needs_a_message(self) -> SlackTargetConfig:
        if self.body is None and self.template is None:
            raise error("template", "a Slack target needs a template (or body) for the message")
        return self


class ConsoleTargetConfig(_BodyConfig):
    kind: Literal["console"]
    retry: RetryConfig = RetryConfig()


class ColumnConfig(Model):
    value: JinjaExpression  # over `event`, `target` and, with `rows`, `row`
    type: Literal["text", "bigint", "double", "boolean", "timestamptz", "jsonb"] = "text"


class BatchConfig(Model):
    max_rows: int = Field(default=1000, ge=1, le=100_000)
    max_wait: Duration = timedelta(seconds=1)


class WarehouseTargetConfig(Model):
    """Rows into PostgreSQL (and what speaks its protocol) or an embedded DuckDB file."""

    kind: Literal["warehouse"]
    url: str
    table: Annotated[str, AfterValidator(table_name)]
    columns: dict[Identifier, ColumnConfig] = Field(min_length=1)
    rows: JinjaExpression | None = None  # giving a list: one row per item
    key: list[Identifier] = Field(min_length=1)
    create_table: bool = False
    batch: BatchConfig = BatchConfig()
    # Batches written at once, each on its own connection: PostgreSQL 2 by default (one
    # being written while the server commits another), DuckDB always 1 (one writer per file).
    concurrency: int | None = Field(default=None, ge=1, le=16)
    timeout: Duration = timedelta(seconds=30)
    retry: RetryConfig = RetryConfig()

    @property
    def batches_at_once(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        return 1 if self.url.startswith("duckdb:///") else 2

    @field_validator("url")
    @classmethod
    def _warehouse_url(cls, url: str) -> str:
        if url.startswith("duckdb:///"):
            if not url.removeprefix("duckdb:///"):
                raise error("url", "duckdb:/// needs a file path")
            if "\0" in url:
                raise error("url", NUL_IN_PATH)
            return url
        if not url.startswith(("postgresql://", "postgres://")):
            scheme = url.split("://", 1)[0] if "://" in url else "(none)"
            raise error(
                "url", f'unsupported scheme "{scheme}": use postgresql://... or duckdb:///PATH'
            )
        return url

    @model_validator(mode="after")
    def _key_in_columns(self) -> WarehouseTargetConfig:
        missing = [name for name in self.key if name not in self.columns]
        if missing:
            raise error("key", f"key column(s) not in columns: {', '.join(missing)}")
        return self

    @field_validator("concurrency")
    @classmethod
    def _one_duckdb_writer(cls, concurrency: int | None, info: ValidationInfo) -> int | None:
        url = info.data.get("url")
        if concurrency not in (None, 1) and isinstance(url, str) and url.startswith("duckdb:///"):
            raise error("concurrency", "DuckDB writes one batch at a time: leave it out or set 1")
        return concurrency


TargetConfig = Annotated[
    HttpTargetConfig | SlackTargetConfig | WarehouseTargetConfig | ConsoleTargetConfig,
    Field(discriminator="kind"),
]


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
