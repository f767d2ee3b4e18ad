"""Templates and expressions as config field types, compiled while the config is validated.

The validation context carries the TemplateCompiler (`{"templates": compiler}`, made by the
loader for the config's `templates_dir`). One pass over the file thus reports every template
problem, with its YAML path, beside every other problem: the loader, `relay check` and the
daemon share this one compile path. A compiled value keeps its source text: it is what the
config serialises to, what the JSON Schema calls a string, and what makes two configs equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, ValidationInfo, WithJsonSchema

from relay.addresses import check_url_origin, split_url
from relay.fields import error, yaml_kind
from relay.render import (
    CompiledTemplate,
    Expression,
    FileTemplate,
    TemplateCompiler,
    UrlTemplate,
)

COMPILER = "templates"  # the validation context's key for the TemplateCompiler
_DEFAULT_DIR = Path("templates")


def compiler_of(info: ValidationInfo) -> TemplateCompiler:
    """The loader's compiler; a model built in code gets one for ./templates."""
    context = info.context if isinstance(info.context, dict) else {}
    compiler = context.get(COMPILER)
    return compiler if isinstance(compiler, TemplateCompiler) else TemplateCompiler(_DEFAULT_DIR)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise error("string_type", f"must be a string, got {yaml_kind(value)}")
    return value


def _compiling(kind: str, compile_one: Any, value: object, info: ValidationInfo) -> Any:
    if isinstance(value, CompiledTemplate | Expression | TargetUrl):
        return value  # already compiled (a model copied or built from compiled parts)
    try:
        return compile_one(compiler_of(info), _text(value))
    except ValueError as exc:
        raise error(kind, str(exc)) from None


def _inline(value: object, info: ValidationInfo) -> CompiledTemplate:
    result: CompiledTemplate = _compiling(
        "template", lambda c, text: c.inline(text, "template"), value, info
    )
    return result


def _file(value: object, info: ValidationInfo) -> FileTemplate:
    result: FileTemplate = _compiling("template", lambda c, text: c.file(text), value, info)
    return result


def _expression(value: object, info: ValidationInfo) -> Expression:
    result: Expression = _compiling(
        "expression", lambda c, text: c.expression(text, "expression"), value, info
    )
    return result


@dataclass(frozen=True, slots=True)
class TargetUrl:
    """An http target's url: a fixed origin, and a path and query that may be a template."""

    source: str
    origin: str
    path: UrlTemplate | str  # a plain string when the url holds no template


def _target_url(value: object, info: ValidationInfo) -> TargetUrl:
    def compile_url(compiler: TemplateCompiler, url: str) -> TargetUrl:
        check_url_origin(url)
        origin, rest = split_url(url)
        if "{{" in rest or "{%" in rest:
            return TargetUrl(url, origin, compiler.url(rest, "url"))
        return TargetUrl(url, origin, rest)

    result: TargetUrl = _compiling("url", compile_url, value, info)
    return result


def _source(value: CompiledTemplate | Expression | TargetUrl) -> str:
    return value.name if isinstance(value, FileTemplate) else value.source


def _string(description: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "description": description})


InlineTemplate = Annotated[
    CompiledTemplate,
    PlainValidator(_inline),
    PlainSerializer(_source),
    _string("A Jinja template (sandboxed, undefined names are errors)."),
]
TemplateFile = Annotated[
    FileTemplate,
    PlainValidator(_file),
    PlainSerializer(_source),
    _string("A Jinja template file in templates_dir."),
]
JinjaExpression = Annotated[
    Expression,
    PlainValidator(_expression),
    PlainSerializer(_source),
    _string("A Jinja expression without braces, e.g. event.data.amount > 100."),
]
HttpUrl = Annotated[
    TargetUrl,
    PlainValidator(_target_url),
    PlainSerializer(_source),
    _string("http(s)://HOST/PATH; the path and query may hold template expressions."),
]
