"""The config file as validated, closed models, and `load_config`, which reports every problem.

The top-level keys mirror the architecture: `sources` (inbound), `routes`, `targets`
(outbound), `store`. Cross-references are checked here; templates are compiled in `app`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from relay.durations import parse_duration
from relay.envsubst import MissingVariable, expand
from relay.errors import ConfigError

RESERVED_PATHS = frozenset({"/healthz", "/metrics"})


def _to_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "duration", "invalid duration {value!r}: write a string such as 15s", {"value": value}
        )
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("duration", str(exc)) from exc


Duration = Annotated[timedelta, BeforeValidator(_to_duration)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HmacVerify(Model):
    """Generic HMAC-SHA256 of the raw body, sent in one header."""

    scheme: Literal["hmac-sha256"]
    secret: SecretStr
    header: str
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""


class Source(Model):
    path: str
    verify: HmacVerify | None = None

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise PydanticCustomError(
                "path", 'path must start with "/", got "{path}"', {"path": path}
            )
        if path in RESERVED_PATHS:
            raise PydanticCustomError("path", '"{path}" is reserved by relay', {"path": path})
        return path


class Retry(Model):
    initial: Duration = timedelta(milliseconds=500)
    multiplier: float = Field(default=2.0, ge=1.0)
    max_interval: Duration = timedelta(minutes=10)
    max_elapsed: Duration = timedelta(hours=24)
    max_attempts: int | None = Field(default=None, ge=1)


class HmacSign(Model):
    scheme: Literal["hmac-sha256"]
    secret: SecretStr
    header: str = "Relay-Signature"


class StandardWebhooksSign(Model):
    scheme: Literal["standard-webhooks"]
    secret: SecretStr

    @field_validator("secret")
    @classmethod
    def _whsec(cls, secret: SecretStr) -> SecretStr:
        text = secret.get_secret_value()
        if not text.startswith("whsec_"):
            raise PydanticCustomError("secret", "must start with whsec_ (Standard Webhooks secret)")
        try:
            key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise PydanticCustomError("secret", "must be whsec_ followed by base64") from exc
        if not key:
            raise PydanticCustomError("secret", "must not be empty after whsec_")
        return secret


Sign = Annotated[HmacSign | StandardWebhooksSign, Field(discriminator="scheme")]


class _BodyMixin(Model):
    body: str | None = None
    template: str | None = None

    @model_validator(mode="after")
    def _one_body_source(self) -> _BodyMixin:
        if self.body is not None and self.template is not None:
            raise PydanticCustomError("body", "set body or template, not both")
        return self


class HttpTarget(_BodyMixin):
    kind: Literal["http"]
    url: str
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    concurrency: int = Field(default=4, ge=1, le=1024)
    sign: Sign | None = None
    retry: Retry = Retry()

    @field_validator("url")
    @classmethod
    def _fixed_origin(cls, url: str) -> str:
        check_url_origin(url)
        return url

    @field_validator("method")
    @classmethod
    def _upper(cls, method: str) -> str:
        if not re.fullmatch(r"[A-Za-z]+", method):
            raise PydanticCustomError("method", 'invalid HTTP method "{m}"', {"m": method})
        return method.upper()


class ConsoleTarget(_BodyMixin):
    kind: Literal["console"]
    retry: Retry = Retry()


Target = Annotated[HttpTarget | ConsoleTarget, Field(discriminator="kind")]
TARGET_KINDS = ("http", "console")


class Route(Model):
    sources: list[str] | None = None
    types: list[str] | None = None
    when: str | None = None
    targets: list[str] = Field(min_length=1)


class Limits(Model):
    max_body_bytes: int = Field(default=1_048_576, ge=1)


class Config(Model):
    listen: str = "127.0.0.1:8080"
    store: str = "sqlite:///var/relay.db"
    limits: Limits = Limits()
    templates_dir: str = "templates"
    sources: dict[str, Source] = Field(default_factory=dict)
    targets: dict[str, Target] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        parse_listen(listen)
        return listen

    @field_validator("store")
    @classmethod
    def _store_scheme(cls, store: str) -> str:
        if not store.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise PydanticCustomError(
                "store", 'unsupported store "{s}": use sqlite:///PATH', {"s": store}
            )
        return store


def check_url_origin(url: str) -> None:
    """Scheme and host are fixed; only the path and query may hold template expressions."""
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*)", url)
    origin = match.group(1) if match else url
    if "{{" in origin or "{%" in origin:
        raise PydanticCustomError(
            "url", "only the path and query may contain template expressions, not scheme or host"
        )
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError(
            "url", 'url must be http(s)://host/..., got "{url}"', {"url": url}
        )


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PydanticCustomError(
            "listen", 'listen must be "HOST:PORT", got "{listen}"', {"listen": listen}
        )
    return host.strip("[]"), int(port)


# -- loading ------------------------------------------------------------------------------


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand, validate and cross-check `path`; raise ConfigError listing every problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping"])
    problems: list[str] = []
    expanded = _expand_tree(raw, os.environ if environ is None else environ, (), problems)
    try:
        config = Config.model_validate(expanded)
    except ValidationError as exc:
        problems.extend(_format_error(error) for error in exc.errors())
        raise ConfigError(problems) from exc
    problems.extend(_cross_check(config))
    if problems:
        raise ConfigError(problems)
    return _resolve_paths(config, path.parent)


def _expand_tree(
    node: Any, environ: Mapping[str, str], loc: tuple[str | int, ...], problems: list[str]
) -> Any:
    if isinstance(node, str):
        try:
            return expand(node, environ)
        except MissingVariable as exc:
            problems.append(f"{format_loc(loc)}: {exc}")
            return node
    if isinstance(node, dict):
        return {k: _expand_tree(v, environ, (*loc, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_tree(v, environ, (*loc, i), problems) for i, v in enumerate(node)]
    return node


def format_loc(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


_TAGGED_FIELDS = ("sign", "verify")


def _strip_tags(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop the discriminator tags pydantic inserts (`targets.x.http.url` → `targets.x.url`)."""
    kept: list[str | int] = []
    for i, part in enumerate(loc):
        is_target_tag = i == 2 and loc[0] == "targets" and part in TARGET_KINDS
        is_scheme_tag = i > 0 and loc[i - 1] in _TAGGED_FIELDS and isinstance(part, str)
        if not (is_target_tag or is_scheme_tag):
            kept.append(part)
    return tuple(kept)


def _format_error(error: ErrorDetails) -> str:
    loc = _strip_tags(tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required"
    elif kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        field_name, tag, expected = (
            ctx.get("discriminator"),
            ctx.get("tag"),
            ctx.get("expected_tags"),
        )
        message = f"unknown {field_name} {tag!r}; expected one of {expected}"
    else:
        message = error["msg"].removeprefix("Value error, ")
    return f"{format_loc(loc)}: {message}"


def _cross_check(config: Config) -> list[str]:
    problems: list[str] = []
    seen_paths: dict[str, str] = {}
    for name, source in config.sources.items():
        if source.path in seen_paths:
            other = seen_paths[source.path]
            problems.append(f'sources.{name}.path: "{source.path}" is also used by source {other}')
        seen_paths.setdefault(source.path, name)
    for i, route in enumerate(config.routes):
        for j, source_name in enumerate(route.sources or []):
            if source_name not in config.sources:
                problems.append(f'routes[{i}].sources[{j}]: no source named "{source_name}"')
        for j, target_name in enumerate(route.targets):
            if target_name not in config.targets:
                problems.append(f'routes[{i}].targets[{j}]: no target named "{target_name}"')
    return problems


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    """Relative paths in the config are relative to the config file, not to the cwd."""
    store = config.store
    if store.startswith("sqlite:///"):
        rest = store.removeprefix("sqlite:///")
        file_part, sep, query = rest.partition("?")
        if not file_part.startswith("/"):
            file_part = str((base_dir / file_part).resolve())
        store = f"sqlite:///{file_part}{sep}{query}"
    templates_dir = str((base_dir / config.templates_dir).resolve())
    return config.model_copy(update={"store": store, "templates_dir": templates_dir})
