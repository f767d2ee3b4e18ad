"""Sandboxed Jinja: every template compiled once at load, strict about undefined names.

A runtime failure becomes a RenderError naming the template and line, because retrying a
template that fails for this event would only fail again.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import object_type_repr

from relay.errors import RenderError
from relay.filters import FILTERS
from relay.urltemplate import URL_FILTERS, finalize, rendered_url_problem, url_text_problem

NESTED_TOO_DEEPLY = "nested too deeply"


def build_environment(templates_dir: Path) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )
    env.filters.update(FILTERS)
    return env


def build_url_environment(templates_dir: Path) -> SandboxedEnvironment:
    """Every expression's output encoded as one path segment or query value (`urltemplate`)."""
    env = build_environment(templates_dir)
    env.finalize = finalize
    env.filters.update(URL_FILTERS)
    return env


class CompiledTemplate:
    """A template ready to render. Its name (a YAML path or a file name) is in every error it
    raises; two are equal when they would render alike (same kind, same text)."""

    def __init__(self, template: jinja2.Template, name: str, source: str) -> None:
        self._template = template
        self.name = name
        self.source = source

    def named(self, name: str) -> Self:
        """The same template, naming `name` in its errors (where the config holds it)."""
        return type(self)(self._template, name, self.source)

    def render(self, context: Mapping[str, Any]) -> str:
        try:
            return self._template.render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"{self.name}{_line_of(exc, self._template)}: {exc}") from exc
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise RenderError(f"{self.name}{_line_of(exc, self._template)}: {exc}") from exc

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.source == self.source

    def __hash__(self) -> int:
        return hash((type(self), self.source))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class FileTemplate(CompiledTemplate):
    """A template file: its errors name the file, wherever the config refers to it."""

    def named(self, name: str) -> Self:
        return self


class UrlTemplate(CompiledTemplate):
    """The path and query of a target's url; a rendered URL that cannot be sent as it is
    fails its delivery here, before any request."""

    def render(self, context: Mapping[str, Any]) -> str:
        url = super().render(context)
        problem = rendered_url_problem(url)
        if problem is not None:
            raise RenderError(f"{self.name}: the rendered URL cannot be sent: {problem}")
        return url


class Expression:
    """A Jinja expression without braces (`event.payload.amount > 100`), ready to evaluate.

    A plain path such as `event.data.userId` is looked up directly, with the result and the
    error Jinja would give: warehouse columns are mostly paths, evaluated per row.
    """

    def __init__(
        self,
        source: str,
        name: str,
        compiled: Callable[..., Any] | None,
        path: tuple[str, ...] | None,
    ) -> None:
        self.source = source
        self.name = name
        self.path = path  # the parts of a plain path, else None
        self._compiled = compiled

    def named(self, name: str) -> Expression:
        return Expression(self.source, name, self._compiled, self.path)

    def __call__(self, context: Mapping[str, Any]) -> Any:
        if self._compiled is None:  # a plain path
            return _look_up(self.path or (), context, self.name)
        try:
            return self._compiled(**context)
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise RenderError(f"{self.name}: {exc}") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


class TemplateCompiler:
    """Compiles templates: urls in their own environment, which encodes every value, the rest
    in one shared environment. Errors are ValueError texts for config."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.env = build_environment(templates_dir)
        self.url_env = build_url_environment(templates_dir)

    def inline(self, source: str, name: str) -> CompiledTemplate:
        try:
            return CompiledTemplate(self.env.from_string(source), name, source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"line {exc.lineno}: {exc.message}") from exc
        except RecursionError:  # Jinja parses nested brackets recursively
            raise ValueError(NESTED_TOO_DEEPLY) from None

    def url(self, source: str, name: str) -> UrlTemplate:
        """A url's path and query; its literal text must already be fit for a URL."""
        try:
            tree = self.url_env.parse(source)
            for data in tree.find_all(nodes.TemplateData):
                problem = url_text_problem(data.data)
                if problem is not None:
                    raise ValueError(problem)
            return UrlTemplate(self.url_env.from_string(tree), name, source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"line {exc.lineno}: {exc.message}") from exc

    def file(self, filename: str) -> FileTemplate:
        """A template file, which equals another with the same text (and so renders alike)."""
        try:
            template = self.env.get_template(filename)
            text, _, _ = self.env.loader.get_source(self.env, filename)  # type: ignore[union-attr]
            return FileTemplate(template, filename, text)
        except jinja2.TemplateNotFound as exc:
            raise ValueError(f'"{filename}" not found in {self.templates_dir.name}/') from exc
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f'"{filename}" line {exc.lineno}: {exc.message}') from exc
        except RecursionError:
            raise ValueError(f'"{filename}": {NESTED_TOO_DEEPLY}') from None

    def expression(self, source: str, name: str) -> Expression:
        """A Jinja expression without braces, e.g. `event.payload.amount > 100`."""
        path = plain_path(source)
        if path is not None:
            return Expression(source, name, None, path)
        try:
            compiled = self.env.compile_expression(source, undefined_to_none=False)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"invalid expression: {exc.message}") from exc
        except RecursionError:
            raise ValueError(f"invalid expression: {NESTED_TOO_DEEPLY}") from None
        return Expression(source, name, compiled, None)


_PATH = re.compile(r"\s*([A-Za-z]\w*(?:\.[A-Za-z]\w*)*)\s*")
# A key with the name of an attribute of a value's type means that attribute to Jinja
# (`x.items` is the dict method): such paths are left to Jinja.
_ATTRIBUTES = frozenset(
    name for kind in (dict, list, str, int, float, bool, type(None)) for name in dir(kind)
)


def plain_path(source: str) -> tuple[str, ...] | None:
    match = _PATH.fullmatch(source)
    if match is None:
        return None
    parts = tuple(match.group(1).split("."))
    if any(part in _ATTRIBUTES for part in parts[1:]):
        return None
    return parts


def _look_up(parts: tuple[str, ...], context: Mapping[str, Any], name: str) -> Any:
    first = parts[0] if parts else ""
    if first not in context:
        raise RenderError(f"{name}: '{first}' is undefined")
    value = context[first]
    for part in parts[1:]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            kind = object_type_repr(value)
            raise RenderError(f"{name}: {kind} has no attribute '{part}'")
    return value


def _line_of(exc: BaseException, template: jinja2.Template) -> str:
    filenames = {template.filename, "<template>"}
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename in filenames]
    return f" line {lines[-1]}" if lines else ""
