"""Property tests of the config loader: whatever a file holds, `load_config` loads it or raises
ConfigError, and each problem names where it is: a YAML path, or the file for what is wrong
with the file as a whole. Never any other exception, never a traceback.

The inputs: random text, random bytes (not UTF-8 too), random trees of every YAML kind written
as YAML (odd keys, deep nesting, huge numbers, anchors and aliases, `${...}` references), and
the shipped config.example.yaml mutated (keys dropped, values replaced, unknown keys added).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.config import Config, SourceConfig
from relay.errors import ConfigError
from relay.fields import yaml_key
from relay.loading import MAX_VALUES, load_config
from relay.shared_config import SIGN_SCHEMES
from relay.sources import SCHEMES
from relay.targets import TARGET_KINDS
from tests.conftest import ConfigWriter

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "config.example.yaml"
# Written as an integer of 5000 digits (more than Python reads from text by default).
HUGE_INT = "HUGE_INT"
ENVIRON = {"SET": "value", "EMPTY": "", "PORT": "8080", "SLACK_WEBHOOK_URL": "http://h/s"}

# -- what the files hold -----------------------------------------------------------------------

# Every key the models know, a few near misses and YAML's special spellings.
KNOWN_KEYS = sorted(
    {
        *Config.model_fields,
        *("path", "verify", "sender", "allow_ips", "trusted_proxies", "scheme", "secret"),
        *("header", "encoding", "prefix", "tolerance", "kind", "url", "method", "headers"),
        *("template", "body", "timeout", "concurrency", "max_per_second", "sign", "retry"),
        *("initial", "multiplier", "max_interval", "max_elapsed", "max_attempts", "table"),
        *("columns", "rows", "key", "create_table", "batch", "max_rows", "max_wait", "value"),
        *("type", "types", "when", "targets", "sources", "max_body_bytes"),
        *("sourcse", "taregts", "<<", "~", "null", "true", "1", ""),
    }
)
WORDS = [
    *TARGET_KINDS,
    *SCHEMES,
    *SIGN_SCHEMES,
    *("15s", "0s", "1.5h", "-1s", "500ms", "99999999999d", "3x", "10"),
    *("http://h/", "https://h:99999/x", "http://{{ x }}/", "http://h/{{ event.id }}", "h/x"),
    *("sqlite:///r.db", "sqlite:///r.db?synchronous=full", "postgresql://u:p@h/d"),
    *("duckdb:///w.duckdb", "duckdb:///", "127.0.0.1:8080", "[::1]:0", ":80"),
    *("/hooks/a", "/healthz", "a b", "10.0.0.0/8", "::1", "flagright-production"),
    *("X-Signature", "bad header", "whsec_c2VjcmV0", "whsec_!!", "event.id", "{{ x", "{% if %}"),
    *("${SET}", "${UNSET}", "${EMPTY:-d}", "${UNSET:-${SET}}", "${", "${1}", "$$", "$${SET}"),
    *("\0", "\t", "é", "\U0001f600", "\ud7ff", "line\nbreak"),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**64), 0, -1, 1024, 1025, 65536, HUGE_INT]),
    st.floats(),  # nan and infinities too
    st.text(max_size=12),
    st.sampled_from(WORDS),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=8),  # !!binary
)
keys = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.dates(),
)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def config_shaped() -> st.SearchStrategy[dict[Any, Any]]:
    """Mostly the right top-level keys, with entries shaped like sources, targets, routes."""
    entry = st.dictionaries(keys, trees, max_size=6)
    source = st.fixed_dictionaries(
        {"path": st.sampled_from(["/hooks/a", "/hooks/b"]) | scalars},
        optional={
            "verify": st.fixed_dictionaries(
                {"scheme": st.sampled_from(tuple(SCHEMES)) | scalars}, optional={"secret": trees}
            ).flatmap(lambda v: entry.map(lambda extra: {**extra, **v})),
            "sender": scalars,
            "allow_ips": trees,
        },
    )
    target = st.fixed_dictionaries(
        {"kind": st.sampled_from(tuple(TARGET_KINDS)) | scalars}, optional={"url": scalars}
    ).flatmap(lambda t: entry.map(lambda extra: {**extra, **t}))
    route = st.fixed_dictionaries(
        {"targets": st.lists(st.sampled_from(["a", "b"]) | scalars, max_size=3) | scalars},
        optional={"sources": trees, "types": trees, "when": scalars},
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "listen": scalars,
            "store": scalars,
            "limits": trees,
            "templates_dir": scalars,
            "sources": st.dictionaries(keys, source | trees, max_size=3) | trees,
            "targets": st.dictionaries(keys, target | trees, max_size=3) | trees,
            "routes": st.lists(route | trees, max_size=3) | trees,
            "unknown": trees,
        },
    )


def dump(tree: Any) -> str:
    """YAML text for `tree`; an object that appears twice is written once, then as an alias."""
    text = yaml.safe_dump(tree, allow_unicode=True, default_flow_style=None, sort_keys=False)
    return text.replace(HUGE_INT, "9" * 5000)


# -- the property ------------------------------------------------------------------------------


def assert_loads_or_explains(path: Path, environ: Mapping[str, str] = ENVIRON) -> None:
    """load_config loads the file, or every problem it lists is located; nothing else."""
    try:
        load_config(path, environ)
    except ConfigError as exc:
        problems = exc.problems
    else:
        return
    assert problems, "a ConfigError without problems"
    roots = top_level_keys(path)
    for problem in problems:
        assert isinstance(problem, str), repr(problem)
        assert names_a_place(problem, path, roots), problem


def top_level_keys(path: Path) -> set[str]:
    """The top-level keys as YAML spells them (none when plain PyYAML cannot read the file)."""
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # then only file-level problems are expected
        return set()
    return {yaml_key(key) for key in tree} if isinstance(tree, dict) else set()


def names_a_place(problem: str, path: Path, roots: set[str]) -> bool:
    """`FILE: message`, or `ROOT.more: message` / `ROOT[i]: message` for a top-level key."""
    if problem.startswith(f"{path}: ") and problem.removeprefix(f"{path}: ").strip():
        return True
    for root in (*roots, *Config.model_fields, "(top level)"):
        rest = problem.removeprefix(root)
        if rest != problem and rest[:1] in (".", "[", ":") and ": " in rest:
            return bool(rest.partition(": ")[2].strip())
    return False


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file, rewritten by each example (a fixture per example would be a new directory)."""
    return tmp_path_factory.mktemp("config") / "relay.yaml"


# -- random text and bytes ---------------------------------------------------------------------

YAML_ALPHABET = string.ascii_letters[:6] + string.digits[:3] + ":-?,[]{}#&*!|>'\"%@`$.~ \n\t\\"


@settings(max_examples=300)
@given(text=st.text(alphabet=YAML_ALPHABET, max_size=80) | st.text(max_size=40))
@example(text="listen: !!int abc\n")
@example(text="store: 2024-13-45\n")
@example(text="a: &x [*x]\n")
@example(text="routes: " + "[" * 2000 + "]" * 2000 + "\n")
@example(text="null: 1\n~: 2\n")
def test_random_text_loads_or_names_the_problem(config_path: Path, text: str) -> None:
    config_path.write_text(text, encoding="utf-8")
    assert_loads_or_explains(config_path)


@settings(max_examples=200)
@given(tree=trees | config_shaped(), cut=st.integers(min_value=0), noise=st.binary(max_size=6))
@example(tree={"listen": "x"}, cut=3, noise=b"\xff\xfe")
def test_yaml_with_bytes_that_are_not_utf8_or_cut_short(
    config_path: Path, tree: Any, cut: int, noise: bytes
) -> None:
    data = dump(tree).encode()
    at = cut % (len(data) + 1)
    config_path.write_bytes(data[:at] + noise + data[at:])
    assert_loads_or_explains(config_path)


# -- random trees ------------------------------------------------------------------------------


@settings(max_examples=300)
@given(tree=trees | config_shaped())
@example(tree={"limits": {"max_body_bytes": HUGE_INT}})
@example(tree={"sources": {1: {"path": 5}, None: {"path": "/x"}}})
@example(tree={"store": "sqlite:///a\0b", "templates_dir": "t\0"})
@example(tree={"routes": [{"targets": ["t"], "when": "(" * 2000 + "1" + ")" * 2000}]})
def test_any_tree_loads_or_names_the_problem(config_path: Path, tree: Any) -> None:
    config_path.write_text(dump(tree), encoding="utf-8")
    assert_loads_or_explains(config_path)


@settings(max_examples=100)
@given(tree=config_shaped(), depth=st.integers(min_value=1, max_value=400))
def test_deeply_nested_values_load_or_name_the_problem(
    config_path: Path, tree: dict[Any, Any], depth: int
) -> None:
    nested: Any = "x"
    for level in range(depth):
        nested = [nested] if level % 2 else {"k": nested}
    tree["sources"] = {"s": {"path": "/s", "verify": nested}}
    config_path.write_text(dump(tree), encoding="utf-8")
    assert_loads_or_explains(config_path)


@settings(max_examples=100)
@given(tree=config_shaped(), data=st.data())
def test_anchors_and_aliases_load_or_name_the_problem(
    config_path: Path, tree: dict[Any, Any], data: st.DataObject
) -> None:
    """A subtree used twice is written once and then aliased; one may contain itself."""
    shared = data.draw(st.dictionaries(keys, trees, min_size=1, max_size=3) | st.lists(trees))
    for name in data.draw(st.lists(st.sampled_from(sorted(Config.model_fields)), max_size=3)):
        tree[name] = shared
    if data.draw(st.booleans(), label="shared contains itself"):
        if isinstance(shared, dict):
            shared["self"] = shared
        else:
            shared.append(shared)
    config_path.write_text(dump(tree), encoding="utf-8")
    assert_loads_or_explains(config_path)


# -- the shipped example, mutated --------------------------------------------------------------


def containers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every mapping and list in `node`, the root first."""
    found = [path]
    children = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in children:
        if isinstance(child, dict | list):
            found.extend(containers(child, (*path, key)))
    return found


def at(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def mutate(tree: dict[str, Any], data: st.DataObject) -> None:
    """Drop a key or an item, replace a value, or add a key, somewhere in `tree`."""
    parent = at(tree, data.draw(st.sampled_from(containers(tree)), label="where"))
    operation = data.draw(st.sampled_from(["drop", "replace", "add"]), label="operation")
    if isinstance(parent, dict):
        names = list(parent)
        if operation == "add" or not names:
            parent[data.draw(keys, label="new key")] = data.draw(trees, label="value")
            return
        name = data.draw(st.sampled_from(names), label="key")
        if operation == "drop":
            del parent[name]
        else:
            parent[name] = data.draw(trees, label="value")
    elif operation == "add" or not parent:
        parent.append(data.draw(trees, label="item"))
    else:
        index = data.draw(st.integers(0, len(parent) - 1), label="index")
        if operation == "drop":
            del parent[index]
        else:
            parent[index] = data.draw(trees, label="item")


@settings(max_examples=80)
@given(data=st.data(), mutations=st.integers(min_value=1, max_value=5))
def test_the_example_config_mutated_loads_or_names_the_problem(
    config_path: Path, data: st.DataObject, mutations: int
) -> None:
    tree = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    for _ in range(mutations):
        mutate(tree, data)
    config_path.write_text(dump(tree), encoding="utf-8")
    assert_loads_or_explains(config_path)


def test_the_example_config_itself_loads() -> None:
    assert_loads_or_explains(EXAMPLE_CONFIG)
    assert load_config(EXAMPLE_CONFIG, {}).targets


# -- regressions: each was a traceback, or a path that named nothing in the file -------------


def problems_of(write_config: ConfigWriter, yaml_text: str) -> list[str]:
    path = write_config(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENVIRON)
    return [problem.removeprefix(f"{path}: ") for problem in caught.value.problems]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("listen: !!int abc\n", "invalid YAML at line 1, column 9: not a valid int"),
        ("listen: !!float abc\n", "invalid YAML at line 1, column 9: not a valid float"),
        ("listen: !!bool abc\n", "invalid YAML at line 1, column 9: not a valid bool"),
        ("listen: !!timestamp abc\n", "invalid YAML at line 1, column 9: not a valid timestamp"),
        ("store: 2024-13-45\n", "invalid YAML at line 1, column 8: not a valid timestamp"),
        (
            "limits: {max_body_bytes: " + "9" * 5000 + "}\n",
            "invalid YAML at line 1, column 26: an integer of more than 4300 digits",
        ),
        (
            "null: 1\n~: 2\n",
            'invalid YAML at line 2, column 1: duplicate key "null" (first at line 1)',
        ),
    ],
)
def test_a_value_yaml_cannot_construct_is_a_problem_at_its_line(
    write_config: ConfigWriter, yaml_text: str, expected: str
) -> None:
    assert problems_of(write_config, yaml_text) == [expected]


@pytest.mark.parametrize(
    "yaml_text",
    [
        "routes: " + "[" * 2000 + "]" * 2000 + "\n",
        "listen: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n",
    ],
)
def test_yaml_nested_too_deeply_is_a_problem_of_the_file(
    write_config: ConfigWriter, yaml_text: str
) -> None:
    assert problems_of(write_config, yaml_text) == ["invalid YAML: nested too deeply"]


@pytest.mark.parametrize(
    "yaml_text", ["routes: &a [*a]\n", "sources: &a {x: *a}\n", "a: &a {b: [1, *a]}\n"]
)
def test_an_alias_inside_the_node_it_names_is_a_problem_of_the_file(
    write_config: ConfigWriter, yaml_text: str
) -> None:
    assert problems_of(write_config, yaml_text) == [
        "an alias (*name) refers to a mapping or list that contains it"
    ]


def test_aliases_that_spell_out_too_many_values_are_refused_at_once(
    write_config: ConfigWriter,
) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]  # ten to the ninth values spelt out
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert problems_of(write_config, "\n".join(lines) + "\n") == [
        f"more than {MAX_VALUES:,} values once aliases are spelt out"
    ]


def test_aliases_within_the_limit_load(write_config: ConfigWriter) -> None:
    path = write_config(
        """\
        targets:
          a: {kind: console, retry: &retry {initial: 1s, max_elapsed: 1h}}
          b: {kind: console, retry: *retry}
        """
    )
    targets = load_config(path, ENVIRON).targets
    assert targets["a"].retry == targets["b"].retry
    assert targets["b"].retry.initial == timedelta(seconds=1)


def test_keys_that_are_not_strings_are_located_as_the_file_spells_them(
    write_config: ConfigWriter,
) -> None:
    yaml_text = (
        "sources: {1: {path: 5}, null: {path: /n}, 2024-01-02: {path: /d}, .inf: {path: /i}}\n"
        "targets: {2: {kind: nope}}\n"
    )
    assert problems_of(write_config, yaml_text) == [
        "sources.1: name must be a string, got an integer; quote it",
        "sources.1.path: must be a string, got an integer",
        "sources.null: name must be a string, got null; quote it",
        "sources.2024-01-02: name must be a string, got a date; quote it",
        "sources..inf: name must be a string, got a number; quote it",
        "targets.2: name must be a string, got an integer; quote it",
        'targets.2.kind: unknown kind "nope"; expected one of: http, slack, warehouse, console',
    ]


def test_a_key_that_is_no_string_where_fields_go_is_an_unknown_key(
    write_config: ConfigWriter,
) -> None:
    yaml_text = "null: 1\nsources: {s: {path: /s, 7: x}}\n"
    assert problems_of(write_config, yaml_text) == [
        f"sources.s.7: unknown key; valid keys here: {', '.join(SourceConfig.model_fields)}",
        f"null: unknown key; valid keys here: {', '.join(Config.model_fields)}",
    ]


def test_a_nul_in_a_file_path_is_a_problem_at_its_path(write_config: ConfigWriter) -> None:
    yaml_text = (
        'store: "sqlite:///a\\0b"\n'
        'templates_dir: "t\\0"\n'
        'targets: {w: {kind: warehouse, url: "duckdb:///x\\0y", table: t, key: [a],'
        " columns: {a: {value: event.id}}}}\n"
    )
    nul = "a file path cannot contain a NUL character (\\0)"
    assert problems_of(write_config, yaml_text) == [
        f"store: {nul}",
        f"templates_dir: {nul}",
        f"targets.w.url: {nul}",
    ]


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        (
            "when",
            "(" * 2000 + "1" + ")" * 2000,
            "routes[0].when: invalid expression: nested too deeply",
        ),
        ("body", "{{ " + "[" * 2000 + "]" * 2000 + " }}", "targets.t.body: nested too deeply"),
    ],
)
def test_a_template_nested_too_deeply_is_a_problem_at_its_path(
    write_config: ConfigWriter, field: str, text: str, expected: str
) -> None:
    route: dict[str, Any] = {"targets": ["t"]}
    target: dict[str, Any] = {"kind": "console"}
    (route if field == "when" else target)[field] = text
    yaml_text = dump({"targets": {"t": target}, "routes": [route], "listen": 5})
    assert expected in problems_of(write_config, yaml_text)


def test_the_checks_of_this_module_accept_only_located_problems(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    roots = {"sources", "a b"}
    assert names_a_place(f"{path}: invalid YAML", path, roots)
    assert names_a_place("sources.x.path: must be a string", path, roots)
    assert names_a_place("a b: unknown key", path, roots)
    assert names_a_place("routes[0]: must be a mapping", path, roots)  # a field of Config
    assert not names_a_place("Traceback (most recent call last):", path, roots)
    assert not names_a_place("sources.x.path:", path, roots)
    assert not names_a_place("elsewhere.x: must be a string", path, roots)
