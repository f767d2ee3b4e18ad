"""The config's JSON Schema, for editors: current, complete, and as strict as relay."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from relay.cli import main
from relay.schema import config_schema, config_schema_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))


def validator() -> jsonschema.protocols.Validator:
    schema = config_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_the_schema_in_the_repository_is_current() -> None:
    stored = (ROOT / "relay.schema.json").read_text(encoding="utf-8")
    assert stored == config_schema_text(), (
        "stale: run `make schema` (relay schema > relay.schema.json)"
    )


def test_relay_schema_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == config_schema()


def test_the_example_config_points_editors_at_the_schema_and_passes_it() -> None:
    first = (ROOT / "config.example.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=relay.schema.json"
    validator().validate(EXAMPLE)


@pytest.mark.parametrize(
    ("where", "key"),
    [((), "sourcse"), (("targets", "slack_flagright"), "templat"), (("limits",), "max_body")],
)
def test_a_misspelt_key_is_refused(where: tuple[str, ...], key: str) -> None:
    config = copy.deepcopy(EXAMPLE)
    node = config
    for part in where:
        node = node[part]
    node[key] = "x"
    errors = list(validator().iter_errors(config))
    assert any(key in error.message for error in errors), [e.message for e in errors]


def test_a_wrong_kind_or_duration_is_refused() -> None:
    config = copy.deepcopy(EXAMPLE)
    config["targets"]["slack_flagright"]["kind"] = "email"
    config["limits"] = {"read_timeout": "15 seconds"}
    assert len(list(validator().iter_errors(config))) >= 2


def properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            yield f"{where}.{name}", prop
        for key, value in node.items():
            yield from properties(value, f"{where}.{key}" if key != "properties" else where)
    elif isinstance(node, list):
        for item in node:
            yield from properties(item, where)


def test_every_field_says_what_it_is_for() -> None:
    undescribed = [
        where for where, prop in properties(config_schema()) if not prop.get("description")
    ]
    assert undescribed == []


def test_defaults_are_written_as_the_config_writes_them() -> None:
    limits = config_schema()["$defs"]["LimitsConfig"]["properties"]
    assert limits["read_timeout"]["default"] == "15s"
    assert limits["max_body_bytes"]["default"] == 1_048_576
