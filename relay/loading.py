"""Loading the config file: YAML, `${ENV}` expansion, validation, and every problem at once.

Every problem is reported as `yaml.path: message`. Messages never quote a secret: values are
echoed only for fields that cannot hold one (durations, enums, paths, the listen address).
Templates and expressions are compiled by validation itself (`relay.templatefields`, with
the compiler for the config's `templates_dir` in the validation context). Cross-references
are checked on the raw tree, so that one run of `relay check` lists every problem even when a
section is invalid.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from relay.config import Config
from relay.config_errors import Loc, Problem, describe, format_loc
from relay.envsubst import EnvError, expand
from relay.errors import ConfigError
from relay.fields import yaml_key, yaml_kind
from relay.render import TemplateCompiler
from relay.store.url import parse_store_url
from relay.templatefields import COMPILER

# Far more than any config needs; a few aliases of aliases could otherwise spell out billions.
MAX_VALUES = 100_000


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand, validate (compiling every template) and cross-check `path`; raise
    ConfigError listing every problem."""
    raw = _read_yaml(path)
    problems: list[Problem] = []
    substituted: list[tuple[Loc, str]] = []
    environ = os.environ if environ is None else environ
    expanded = _expand_tree(raw, _Expansion(environ, problems, substituted), ())
    unexpanded = {where for where, _ in problems}  # reported once, as the missing variable
    config: Config | None = None
    later: list[Problem] = []
    context = {COMPILER: TemplateCompiler(_templates_dir(expanded, path.parent))}
    try:
        config = Config.model_validate(expanded, context=context)
    except ValidationError as exc:
        later.extend(describe(error, expanded) for error in exc.errors())
    later.extend(_cross_check(expanded))
    problems.extend(problem for problem in later if problem[0] not in unexpanded)
    problems = list(dict.fromkeys(problems))
    if problems or config is None:
        # Raised outside the `except`: a chained ValidationError would show input values.
        raise ConfigError([f"{where}: {message}" for where, message in problems])
    resolved = _resolve_paths(config, path.parent)
    resolved.set_credentials_from_env(
        value for loc, value in substituted if _holds_credentials(loc)
    )
    return resolved


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (the last would win silently),
    and reports a value its tag cannot hold (`2024-13-01`, `!!int x`) where it is."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            # PyYAML's own constructors fail so; the value is not quoted: it may be a secret.
            kind = node.tag.rpartition(":")[2] or node.tag
            problem = f"not a valid {kind}"
            digits = sys.get_int_max_str_digits()
            if kind == "int" and 0 < digits < len(str(node.value)):
                problem = f"an integer of more than {digits} digits"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

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
                    f'duplicate key "{yaml_key(key)}" (first at line {first_line[key]})',
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
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError([f"{path}: invalid YAML: nested too deeply"]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping, got {yaml_kind(raw)}"])
    problem = _alias_problem(raw)
    if problem is not None:
        raise ConfigError([f"{path}: {problem}"])
    return raw


def _alias_problem(root: dict[str, Any]) -> str | None:
    """Why aliases make the tree unusable: one inside the node it names (`&a [*a]`), which
    never ends, or so many that the config they spell out has more than MAX_VALUES values."""
    seen = 0
    open_nodes: set[int] = set()  # the mappings and lists being walked, by id

    def walk(node: Any) -> str | None:
        nonlocal seen
        seen += 1
        if seen > MAX_VALUES:
            return f"more than {MAX_VALUES:,} values once aliases are spelt out"
        if not isinstance(node, dict | list):
            return None
        if id(node) in open_nodes:
            return "an alias (*name) refers to a mapping or list that contains it"
        open_nodes.add(id(node))
        children = node.values() if isinstance(node, dict) else node
        problem = next(filter(None, map(walk, children)), None)
        open_nodes.discard(id(node))
        return problem

    return walk(root)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return "invalid YAML"
    mark = exc.problem_mark
    text = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context and exc.context_mark is not None and exc.context_mark.line != mark.line:
        text += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return text


@dataclass
class _Expansion:
    environ: Mapping[str, str]
    problems: list[Problem]
    substituted: list[tuple[Loc, str]]  # (where, value) of each `${VAR}` put in place


def _expand_tree(node: Any, expansion: _Expansion, loc: Loc) -> Any:
    if isinstance(node, str):
        values: list[str] = []
        try:
            return expand(node, expansion.environ, values)
        except EnvError as exc:
            expansion.problems.append((format_loc(loc), str(exc)))
            return node
        finally:
            expansion.substituted.extend((loc, value) for value in values)
    if isinstance(node, dict):
        return {k: _expand_tree(v, expansion, (*loc, yaml_key(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_tree(v, expansion, (*loc, i)) for i, v in enumerate(node)]
    return node


def _holds_credentials(loc: Loc) -> bool:
    """Where a `${VAR}` value is a credential: a target's headers or url, any secret, the store.

    A url from the environment is a credential too: a Slack webhook url is its own token, and
    a database url may carry a password.
    """
    if loc[:1] == ("store",) or "secret" in loc:
        return True
    return loc[:1] == ("targets",) and len(loc) > 2 and loc[2] in ("headers", "url")


def _entries(raw: Mapping[str, Any], section: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, mapping) for each well-formed entry of `sources` or `targets` in the raw tree."""
    entries = raw.get(section)
    for name, entry in entries.items() if isinstance(entries, dict) else ():
        if isinstance(entry, dict):
            yield yaml_key(name), entry


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
    for section in ("sources", "targets"):
        problems.extend(_unknown_references(raw, section))
    return problems


def _unknown_references(raw: Mapping[str, Any], section: str) -> Iterator[Problem]:
    """Each name in a route's `sources` or `targets` that the section does not define."""
    defined = raw.get(section, {})
    if not isinstance(defined, dict):
        return  # reported by validation; every reference would look wrong
    names = {yaml_key(name) for name in defined}
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


def _templates_dir(raw: Mapping[str, Any], base_dir: Path) -> Path:
    """Where template files are, as the raw tree says (validation reports a wrong value)."""
    templates_dir = raw.get("templates_dir", "templates")
    return base_dir / templates_dir if isinstance(templates_dir, str) else base_dir


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    """Relative paths in the config are relative to the config file, not to the cwd."""
    store = str(parse_store_url(config.store).resolved(base_dir))
    templates_dir = str((base_dir / config.templates_dir).resolve())
    targets = {name: target.resolved(base_dir) for name, target in config.targets.items()}
    return config.model_copy(
        update={"store": store, "templates_dir": templates_dir, "targets": targets}
    )
