"""The config file as validated, closed models, and `load_config`, which reports every problem.

The top-level keys mirror the architecture: `sources` (inbound), `routes`, `targets`
(outbound), `store`. Cross-references are checked here; templates are compiled in `app`, and
here too when anything else is wrong, so that `relay check` lists every problem in one run.

Every problem is reported as `yaml.path: message`. Messages never quote a secret: values are
echoed only for fields that cannot hold one (durations, enums, paths, the listen address).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
import types
from collections.abc import Hashable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from relay.durations import EXAMPLES, parse_duration
from relay.envsubst import EnvError, expand
from relay.errors import ConfigError
from relay.render import TemplateCompiler

RESERVED_PATHS = frozenset({"/healthz", "/metrics"})
TARGET_KINDS = ("http", "console")
SIGN_SCHEMES = ("hmac-sha256", "standard-webhooks")
SQLITE_OPTIONS = {"synchronous": ("normal", "full"), "busy_timeout": None}

# An HTTP header name is an RFC 9110 token.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ORIGIN = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*)(.*)$", re.DOTALL)


def _error(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose text is used as is (no `{placeholder}` formatting)."""
    return PydanticCustomError(kind, "{message}", {"message": message})


def _to_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise _error("duration", f"invalid duration {value}: add a unit (use e.g. {EXAMPLES})")
    if not isinstance(value, str):
        raise _error("duration", f"must be a duration such as 15s, got {_kind(value)}")
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise _error("duration", str(exc)) from None
    if duration <= timedelta(0):
        raise _error("duration", f'invalid duration "{value}": must be more than 0')
    return duration


def _secret_not_empty(secret: SecretStr) -> SecretStr:
    if not secret.get_secret_value():
        raise _error("secret", "must not be empty")
    return secret


def _header_name(name: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise _error("header", f'invalid header name "{name}": use letters, digits and "-"')
    return name


Duration = Annotated[timedelta, BeforeValidator(_to_duration)]
Secret = Annotated[SecretStr, AfterValidator(_secret_not_empty)]
HeaderName = Annotated[str, AfterValidator(_header_name)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HmacVerify(Model):
    """Generic HMAC-SHA256 of the raw body, sent in one header."""

    scheme: Literal["hmac-sha256"]
    secret: Secret
    header: HeaderName
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""


class Source(Model):
    path: str
    verify: HmacVerify | None = None

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise _error("path", f'path must start with "/", got "{path}"')
        if re.search(r"[\s?#{}]", path):
            raise _error("path", f'path "{path}" must not contain spaces, "?", "#", "{{" or "}}"')
        if path in RESERVED_PATHS:
            raise _error("path", f'"{path}" is reserved by relay')
        return path


class Retry(Model):
    initial: Duration = timedelta(milliseconds=500)
    multiplier: float = Field(default=2.0, ge=1.0)
    max_interval: Duration = timedelta(minutes=10)
    max_elapsed: Duration = timedelta(hours=24)
    max_attempts: int | None = Field(default=None, ge=1)


class HmacSign(Model):
    scheme: Literal["hmac-sha256"]
    secret: Secret
    header: HeaderName = "Relay-Signature"


class StandardWebhooksSign(Model):
    scheme: Literal["standard-webhooks"]
    secret: SecretStr

    @field_validator("secret")
    @classmethod
    def _whsec(cls, secret: SecretStr) -> SecretStr:
        text = secret.get_secret_value()
        if not text.startswith("whsec_"):
            raise _error("secret", "must start with whsec_ (Standard Webhooks secret)")
        try:
            key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise _error("secret", "must be whsec_ followed by base64") from None
        if not key:
            raise _error("secret", "must not be empty after whsec_")
        return secret


Sign = Annotated[HmacSign | StandardWebhooksSign, Field(discriminator="scheme")]


class _BodyMixin(Model):
    body: str | None = None
    template: str | None = None

    @model_validator(mode="after")
    def _one_body_source(self) -> _BodyMixin:
        if self.body is not None and self.template is not None:
            raise _error("body", "set body or template, not both")
        return self


class HttpTarget(_BodyMixin):
    kind: Literal["http"]
    url: str
    method: str = "POST"
    headers: dict[HeaderName, str] = Field(default_factory=dict)
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
            raise _error("method", f'invalid HTTP method "{method}"')
        return method.upper()


class ConsoleTarget(_BodyMixin):
    kind: Literal["console"]
    retry: Retry = Retry()


Target = Annotated[HttpTarget | ConsoleTarget, Field(discriminator="kind")]


class Route(Model):
    sources: list[str] | None = None
    types: list[str] | None = None
    when: str | None = None
    targets: list[str]

    @field_validator("sources", "types")
    @classmethod
    def _not_empty(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is not None and not value:
            what = str(info.field_name).removesuffix("s")
            raise _error("empty", f"must not be empty (leave it out to match every {what})")
        return value

    @field_validator("targets")
    @classmethod
    def _some_target(cls, value: list[str]) -> list[str]:
        if not value:
            raise _error("empty", "must name at least one target")
        return value


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
    def _store(cls, store: str) -> str:
        check_store(store)
        return store


def split_url(url: str) -> tuple[str, str]:
    """`scheme://host[:port]` and the rest (path, query, fragment)."""
    match = _ORIGIN.match(url)
    return (match.group(1), match.group(2)) if match else (url, "")


def check_url_origin(url: str) -> None:
    """Scheme and host are fixed; only the path and query may hold template expressions."""
    origin, rest = split_url(url)
    if "{{" in origin or "{%" in origin:
        raise _error(
            "url", "only the path and query may contain template expressions, not scheme or host"
        )
    parts = urlsplit(origin)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _error("url", f'url must be http(s)://HOST/..., got "{_url_preview(origin, rest)}"')
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise _error("url", f'invalid port in "{_url_preview(origin, rest)}"') from None


def _url_preview(origin: str, rest: str) -> str:
    """Enough of a url to find it, without the user info, path or query that may hold secrets."""
    if "://" not in origin:
        origin, sep, _ = origin.partition("/")
        return origin + ("/..." if sep else "")
    scheme, _, authority = origin.partition("://")
    if "@" in authority:
        authority = "...@" + authority.rpartition("@")[2]
    return f"{scheme}://{authority}" + ("/..." if rest else "")


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    ok = sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536
    if not ok:
        raise _error("listen", f'listen must be "HOST:PORT", got "{listen}"')
    return host.strip("[]"), int(port)


def check_store(store: str) -> None:
    """Only the embedded SQLite store exists; its query options are checked here, not at start."""
    scheme, sep, _ = store.partition("://")
    if not sep:
        raise _error("store", f'store must be a URL such as sqlite:///var/relay.db, got "{store}"')
    if not store.startswith("sqlite:///"):
        # Only the scheme is quoted: a database URL may carry a password.
        raise _error("store", f'unsupported store "{scheme}://...": use sqlite:///PATH')
    file_part, _, query = store.removeprefix("sqlite:///").partition("?")
    if not file_part:
        raise _error("store", "sqlite:/// needs a file path, e.g. sqlite:///var/relay.db")
    wrong: list[str] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        allowed = SQLITE_OPTIONS.get(name, ())
        if name not in SQLITE_OPTIONS:
            wrong.append(f'unknown option "{name}" (use {" or ".join(SQLITE_OPTIONS)})')
        elif allowed is not None and value not in allowed:
            wrong.append(f'{name} must be {" or ".join(allowed)}, got "{value}"')
        elif name == "busy_timeout":
            try:
                parse_duration(value)
            except ValueError as exc:
                wrong.append(f"busy_timeout: {exc}")
    if wrong:
        raise _error("store", "; ".join(wrong))


# -- loading ------------------------------------------------------------------------------

Loc = tuple[str | int, ...]
Problem = tuple[str, str]  # (yaml path, message)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand, validate and cross-check `path`; raise ConfigError listing every problem.

    When anything is wrong, templates and `when` expressions are compiled too, so one run
    lists every problem; a config that validates has them compiled by `app.compile_config`.
    """
    raw = _read_yaml(path)
    problems: list[Problem] = []
    expanded = _expand_tree(raw, os.environ if environ is None else environ, (), problems)
    unexpanded = {where for where, _ in problems}  # reported once, as the missing variable
    config: Config | None = None
    later: list[Problem] = []
    try:
        config = Config.model_validate(expanded)
    except ValidationError as exc:
        later.extend(_format_error(error) for error in exc.errors())
    later.extend(_cross_check(expanded))
    if problems or later:
        later.extend(_check_templates(expanded, path.parent))
    problems.extend(problem for problem in later if problem[0] not in unexpanded)
    problems = list(dict.fromkeys(problems))
    if problems or config is None:
        # Raised outside the `except`: a chained ValidationError would show input values.
        raise ConfigError([f"{where}: {message}" for where, message in problems])
    return _resolve_paths(config, path.parent)


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (the last would win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader reports it
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f'duplicate key "{key}" (first at line {first_line[key]})',
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: cannot read: not UTF-8 text (byte {exc.start})"]) from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        # One line, without the snippet PyYAML quotes (the line may hold a secret).
        raise ConfigError([f"{path}: {_yaml_problem(exc)}"]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping, got {_kind(raw)}"])
    return raw


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return "invalid YAML"
    mark = exc.problem_mark
    text = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context and exc.context_mark is not None and exc.context_mark.line != mark.line:
        text += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return text


def _expand_tree(node: Any, environ: Mapping[str, str], loc: Loc, problems: list[Problem]) -> Any:
    if isinstance(node, str):
        try:
            return expand(node, environ)
        except EnvError as exc:
            problems.append((format_loc(loc), str(exc)))
            return node
    if isinstance(node, dict):
        return {k: _expand_tree(v, environ, (*loc, _key(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_tree(v, environ, (*loc, i), problems) for i, v in enumerate(node)]
    return node


def format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def _key(key: object) -> str:
    """A mapping key as the operator wrote it."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return str(key).lower()
    return str(key)


def _strip_tags(loc: Loc) -> Loc:
    """Drop the discriminator tags pydantic inserts (`targets.x.http.url` → `targets.x.url`)."""
    parts = list(loc)
    if len(parts) > 2 and parts[0] == "targets" and parts[2] in TARGET_KINDS:
        del parts[2]  # targets.NAME.<kind>
        if len(parts) > 3 and parts[2] == "sign" and parts[3] in SIGN_SCHEMES:
            del parts[3]  # targets.NAME.sign.<scheme>
    return tuple(parts)


_TYPE_MESSAGES = {
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
}
_NUMBER_LIMITS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_TAG_CHOICES = {"kind": TARGET_KINDS, "scheme": SIGN_SCHEMES}


def _format_error(error: ErrorDetails) -> Problem:
    raw_loc = tuple(error["loc"])
    loc = _strip_tags(raw_loc)
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx", {})
    if loc and loc[-1] == "[key]":
        # A mapping key (a name) failed: point at the key itself.
        loc = (*loc[:-2], _key(loc[-2])) if len(loc) > 1 else loc[:-1]
        if kind == "string_type":
            return format_loc(loc), f"name must be a string, got {_kind(value)}; quote it"
    if kind == "extra_forbidden":
        message = _unknown_key(str(raw_loc[-1]), _fields_at(raw_loc[:-1]))
    elif kind == "missing":
        message = "missing required key"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "")).strip("'")
        loc = (*loc, field)
        tags = ", ".join(_TAG_CHOICES.get(field, ()))
        if kind == "union_tag_not_found":
            message = f"missing required key; expected one of: {tags}"
        else:
            message = f'unknown {field} "{ctx.get("tag")}"; expected one of: {tags}'
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        expected = f"one of: {', '.join(choices)}" if len(choices) > 1 else "".join(choices)
        message = f"unknown {loc[-1] if loc else 'value'} {_show(value)}; expected {expected}"
    elif kind in _TYPE_MESSAGES:
        message = f"{_TYPE_MESSAGES[kind]}, got {_kind(value)}"
    elif kind in _NUMBER_LIMITS:
        message = f"{_must(error['msg'])}, got {_show(value)}"
    else:
        message = _must(error["msg"].removeprefix("Value error, "))
    return format_loc(loc), message


def _must(text: str) -> str:
    return text.replace("Input should be ", "must be ", 1)


def _unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f'unknown key (did you mean "{close[0]}"?)'
    if allowed:
        return f"unknown key; valid keys here: {', '.join(allowed)}"
    return "unknown key"


def _kind(value: object) -> str:
    """What YAML produced, by type only (never the value, which may be a secret)."""
    if value is None or isinstance(value, bool):
        return _key(value)
    names = [(int, "an integer"), (float, "a number"), (str, "a string")]
    names += [(list, "a list"), (dict, "a mapping")]
    return next((name for cls, name in names if isinstance(value, cls)), type(value).__name__)


def _show(value: object) -> str:
    """A scalar as YAML spells it; only for fields that cannot hold a secret."""
    if isinstance(value, str):
        return f'"{value}"'
    if value is None or isinstance(value, bool):
        return _key(value)
    if isinstance(value, int | float):
        return str(value)
    return _kind(value)


def _fields_at(loc: Loc) -> list[str]:
    """The keys the model at pydantic location `loc` (tags included) accepts."""
    node: Any = Config
    for part in loc:
        node = _child(node, part)
    model = _unwrap(node)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            options = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(options) == 1:
                annotation = options[0]
                continue
        return annotation


def _child(annotation: Any, part: str | int) -> Any:
    node = _unwrap(annotation)
    origin = get_origin(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(str(part))
        return field.annotation if field is not None else None
    if origin is dict:
        return get_args(node)[1]
    if origin is list:
        return get_args(node)[0]
    if origin in (Union, types.UnionType):
        for option in map(_unwrap, get_args(node)):
            if isinstance(option, type) and issubclass(option, BaseModel) and part in _tags(option):
                return option
    return None


def _tags(model: type[BaseModel]) -> Iterator[object]:
    for field in model.model_fields.values():
        if get_origin(field.annotation) is Literal:
            yield from get_args(field.annotation)


def _entries(raw: Mapping[str, Any], section: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, mapping) for each well-formed entry of `sources` or `targets` in the raw tree."""
    entries = raw.get(section)
    for name, entry in entries.items() if isinstance(entries, dict) else ():
        if isinstance(entry, dict):
            yield _key(name), entry


def _routes(raw: Mapping[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    routes = raw.get("routes")
    for i, route in enumerate(routes if isinstance(routes, list) else ()):
        if isinstance(route, dict):
            yield i, route


def _cross_check(raw: Mapping[str, Any]) -> list[Problem]:
    """Checks across keys and sections, on the raw tree: made even when a section is invalid."""
    problems: list[Problem] = []
    seen_paths: dict[str, str] = {}
    for name, source in _entries(raw, "sources"):
        path = source.get("path")
        if isinstance(path, str) and path in seen_paths:
            problems.append(
                (f"sources.{name}.path", f'"{path}" is also used by source {seen_paths[path]}')
            )
        elif isinstance(path, str):
            seen_paths[path] = name
    for name, target in _entries(raw, "targets"):
        if None not in (target.get("body"), target.get("template")):
            # Also a model check, but pydantic skips that when any field of the target is wrong.
            problems.append((f"targets.{name}", "set body or template, not both"))
    for section in ("sources", "targets"):
        problems.extend(_unknown_references(raw, section))
    return problems


def _unknown_references(raw: Mapping[str, Any], section: str) -> Iterator[Problem]:
    """Each name in a route's `sources` or `targets` that the section does not define."""
    defined = raw.get(section, {})
    if not isinstance(defined, dict):
        return  # reported by validation; every reference would look wrong
    names = {_key(name) for name in defined}
    for i, route in _routes(raw):
        refs = route.get(section)
        for j, ref in enumerate(refs if isinstance(refs, list) else ()):
            if isinstance(ref, str) and ref not in names:
                yield f"routes[{i}].{section}[{j}]", _no_such(section, ref, names)


def _no_such(section: str, name: str, names: set[str]) -> str:
    what = section.removesuffix("s")
    close = difflib.get_close_matches(name, sorted(names), n=1)
    if close:
        return f'no {what} named "{name}" (did you mean "{close[0]}"?)'
    if names:
        return f'no {what} named "{name}"; {section} are: {", ".join(sorted(names))}'
    return f'no {what} named "{name}"; no {section} are defined'


def _check_templates(raw: Mapping[str, Any], base_dir: Path) -> list[Problem]:
    """Compile every template and `when`, with the messages `app.compile_config` gives."""
    templates_dir = raw.get("templates_dir", "templates")
    has_dir = isinstance(templates_dir, str)
    compiler = TemplateCompiler(base_dir / templates_dir if has_dir else base_dir)
    problems: list[Problem] = []
    for where, kind, text in _template_fields(raw):
        try:
            if kind == "expression":
                compiler.expression(text, where)
            elif kind == "inline":
                compiler.inline(text, where)
            elif has_dir:
                compiler.file(text)
        except ValueError as exc:
            problems.append((where, str(exc)))
    return problems


def _template_fields(raw: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(yaml path, "expression" | "inline" | "file", text) for each template in the tree."""
    for i, route in _routes(raw):
        if isinstance(route.get("when"), str):
            yield f"routes[{i}].when", "expression", route["when"]
    for name, target in _entries(raw, "targets"):
        where = f"targets.{name}"
        url_rest = split_url(target["url"])[1] if isinstance(target.get("url"), str) else ""
        if "{{" in url_rest or "{%" in url_rest:
            yield f"{where}.url", "inline", url_rest
        headers = target.get("headers")
        for header, value in headers.items() if isinstance(headers, dict) else ():
            if isinstance(value, str):
                yield f"{where}.headers.{_key(header)}", "inline", value
        if isinstance(target.get("body"), str):
            yield f"{where}.body", "inline", target["body"]
        if isinstance(target.get("template"), str):
            yield f"{where}.template", "file", target["template"]


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
