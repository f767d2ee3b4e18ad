"""Warehouse rows: the fast mapping path gives exactly the reference path's rows and errors.

The reference path evaluates every column in the full template context; the fast path reads
plain-path columns straight from the event. Both run here over every shipped sample through
the shipped example targets and over hand-made awkward events, and must agree value for value
and type for type (True is not 1, 2.0 is not 2), errors included.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from relay import preview
from relay.errors import RenderError
from relay.events import Event
from relay.loading import load_config
from relay.render import TemplateCompiler
from relay.samples import SENDERS, samples
from relay.targets.warehouse import WarehouseTargetConfig, plan_warehouse_target
from relay.warehouse.rows import Row, RowMapper

ROOT = Path(__file__).resolve().parents[1]
COMPILER = TemplateCompiler(ROOT / "templates")
NOW = 1731404490.25


def mapper(columns: dict[str, tuple[str, str]], rows: str | None = None) -> RowMapper:
    spec = WarehouseTargetConfig.model_validate(
        {
            "kind": "warehouse",
            "url": "duckdb:///unused.duckdb",
            "table": "t",
            "columns": {name: {"value": v, "type": t} for name, (v, t) in columns.items()},
            "key": [next(iter(columns))],
            "rows": rows,
        }
    )
    return plan_warehouse_target("wh", spec).mapper


def example_mappers() -> dict[str, RowMapper]:
    loaded = load_config(ROOT / "config.example.yaml", {})
    mappers = {}
    for name, target in loaded.targets.items():
        if isinstance(target, WarehouseTargetConfig):
            mappers[name] = plan_warehouse_target(name, target).mapper
    return mappers


def sample_events() -> list[Event]:
    return [
        preview.build_event(sender, sender, s.payload, NOW)
        for sender in SENDERS
        for s in samples(sender)
    ]


def outcome(produce: Any, event: Event) -> str:
    """Rows with every value's type, or the error's text: comparable with ==, NaN included."""
    try:
        rows: list[Row] = produce(event)
    except RenderError as exc:
        return f"RenderError: {exc}"
    return repr([[(type(v).__name__, v) for v in row] for row in rows])


def event(payload: Any, **fields: Any) -> Event:
    body = json.dumps(payload).encode()
    values: dict[str, Any] = {
        "source": "app",
        "id": "e-1",
        "type": "t",
        "received_at": NOW,
        "body": body,
        "payload": payload,
        "headers": {"x-request": "r-1", "host": "relay.local"},
        "data_key": "data",
        "created_at": None,
    }
    values.update(fields)
    return Event(**values)


# -- the shipped examples over the shipped samples ---------------------------------------------


@pytest.mark.parametrize("target_name", sorted(example_mappers()))
def test_example_targets_map_every_sample_the_same_both_ways(target_name: str) -> None:
    rows_mapper = example_mappers()[target_name]
    compared = 0
    for sample_event in sample_events():
        reference = outcome(rows_mapper.checked_rows_for, sample_event)
        assert outcome(rows_mapper.rows_for, sample_event) == reference, sample_event.type
        compared += 1
    assert compared >= 30


def test_flag_evaluations_rows_come_from_the_fast_path() -> None:
    """Flagsmith identity events through the example: the fast path itself succeeds."""
    rows_mapper = example_mappers()["flag_evaluations"]
    identity = next(e for e in sample_events() if e.type == "IDENTITY_FLAGS")
    fast = rows_mapper.fast.rows_for(identity)
    assert len(fast) == len(identity.payload["flags"]) >= 2
    assert outcome(rows_mapper.fast.rows_for, identity) == outcome(
        rows_mapper.checked_rows_for, identity
    )


# -- awkward events ---------------------------------------------------------------------------

PLAIN: dict[str, tuple[str, str]] = {
    "event_id": ("event.id", "text"),
    "source": ("event.source", "text"),
    "target": ("target.name", "text"),
    "received": ("event.received_at", "timestamptz"),
    "received_text": ("event.received_at", "text"),
    "created": ("event.created_at", "timestamptz"),
    "host": ("event.headers.host", "text"),
    "request": ("event.headers['x-request']", "text"),  # Jinja, not a plain path
    "amount": ("event.data.amount", "bigint"),
    "price": ("event.data.price", "double"),
    "paid": ("event.data.paid", "boolean"),
    "at": ("event.data.at", "timestamptz"),
    "detail": ("event.data.detail", "jsonb"),
    "whole": ("event.payload", "jsonb"),
    "label": ("event.data.label", "text"),
}
GOOD_DATA: dict[str, Any] = {
    "amount": 12,
    "price": 1.5,
    "paid": True,
    "at": 1772368496789,
    "detail": {"a": [1, 2.5, None, "ü"]},
    "label": "plain",
}
AWKWARD: list[dict[str, Any]] = [
    {},  # every key missing
    {"amount": "12", "price": "2.5e3", "paid": "FALSE", "at": "2026-03-01T12:34:56Z"},
    {"amount": 12.0, "price": 3, "paid": 1, "at": 1.5},
    {"amount": True},
    {"amount": 2**63},
    {"amount": -(2**63)},
    {"amount": 12.5},
    {"price": math.nan},
    {"price": "nan"},
    {"at": "yesterday"},
    {"at": True},
    {"detail": 2**70},
    {"detail": "\ud800"},
    {"label": "\ud800"},
    {"label": {"nested": ["x"]}},
    {"label": ["a", 1]},
    {"label": False},
    {"label": 7},
    {"label": None},
    {"amount": None, "price": None, "paid": None, "at": None, "detail": None},
]


@pytest.mark.parametrize("changes", AWKWARD)
def test_plain_columns_agree_on_awkward_values(changes: dict[str, Any]) -> None:
    rows_mapper = mapper(PLAIN)
    data = {**GOOD_DATA, **changes} if changes else {}
    for item in (
        event({"id": "e-1", "data": data}),
        event({"id": "e-1", "data": data}, created_at=1700000000.5),
    ):
        assert outcome(rows_mapper.rows_for, item) == outcome(rows_mapper.checked_rows_for, item)


def test_plain_columns_take_the_fast_path_on_good_values() -> None:
    rows_mapper = mapper(PLAIN)
    item = event({"id": "e-1", "data": GOOD_DATA}, created_at=1700000000.5)
    assert outcome(rows_mapper.fast.rows_for, item) == outcome(rows_mapper.checked_rows_for, item)
    ((event_id, source, target, received, received_text, *_),) = rows_mapper.fast.rows_for(item)
    assert (event_id, source, target) == ("e-1", "app", "wh")
    assert received.timestamp() == NOW
    assert received_text == "2024-11-12T09:41:30.250000+00:00"


@pytest.mark.parametrize(
    "payload",
    [
        {"data": "not an object"},
        {"data": None},
        {"data": [1, 2]},
        {"no_data": True},
        ["a", "list"],
        "text",
    ],
)
def test_a_payload_of_another_shape_fails_the_same_way(payload: Any) -> None:
    rows_mapper = mapper(PLAIN)
    item = event(payload)
    reference = outcome(rows_mapper.checked_rows_for, item)
    assert reference.startswith("RenderError: ")
    assert outcome(rows_mapper.rows_for, item) == reference


EXPLODED: dict[str, tuple[str, str]] = {
    "event_id": ("event.id", "text"),
    "n": ("row.n", "bigint"),
    "sku": ("row.item.sku", "text"),
    "whole_row": ("row", "jsonb"),
    "note": ("row.note | default('none')", "text"),  # Jinja, not a plain path
    "count": ("event.data.lines | length", "bigint"),
}


@pytest.mark.parametrize(
    "lines",
    [
        [{"n": 1, "item": {"sku": "a"}}, {"n": 2, "item": {"sku": "b"}, "note": "x"}],
        [],
        [{"n": 1}],  # row.item missing
        [{"n": "one", "item": {"sku": "a"}}],
        [1, 2],
        "not a list",
        {"n": 1},
        None,
    ],
)
def test_exploded_rows_agree_including_jinja_columns(lines: Any) -> None:
    rows_mapper = mapper(EXPLODED, rows="event.data.lines")
    item = event({"id": "o-1", "data": {"lines": lines}})
    assert outcome(rows_mapper.rows_for, item) == outcome(rows_mapper.checked_rows_for, item)


def test_rows_from_a_jinja_expression_agree() -> None:
    rows_mapper = mapper(EXPLODED, rows="event.data.lines | selectattr('n') | list")
    item = event({"id": "o-1", "data": {"lines": [{"n": 0}, {"n": 3, "item": {"sku": "z"}}]}})
    reference = outcome(rows_mapper.checked_rows_for, item)
    assert reference.count("('str', 'z')") == 1  # the one line with a true `n`
    assert outcome(rows_mapper.fast.rows_for, item) == reference


def test_row_outside_rows_and_unknown_event_fields_are_left_to_jinja() -> None:
    """`row` without `rows`, and `event.nope`, are not plain paths to the fast path: Jinja's
    own error is the one reported."""
    item = event({"id": "e-1", "data": {}})
    says = {
        "event.nope": "targets.wh.columns.a.value: dict object has no attribute 'nope'",
        "row.x": "targets.wh.columns.a.value: 'row' is undefined",
    }
    for expression, message in says.items():
        rows_mapper = mapper({"a": (expression, "text")})
        reference = outcome(rows_mapper.checked_rows_for, item)
        assert reference == f"RenderError: {message}"
        assert outcome(rows_mapper.rows_for, item) == reference
