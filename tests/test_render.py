"""Templates: sandboxed, strict about undefined names, errors that name template and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.errors import RenderError
from relay.events import Event, template_context
from relay.render import TemplateCompiler

EVENT = Event(
    source="flagright",
    id="evt-1",
    type="CASE_OPENED",
    received_at=0.0,
    body=b'{"id":"evt-1","type":"CASE_OPENED","data":{"caseId":"C-1","note":"caf\\u00e9 \\"x\\""}}',
    payload={"id": "evt-1", "type": "CASE_OPENED", "data": {"caseId": "C-1", "note": 'café "x"'}},
    headers={"content-type": "application/json"},
    data_key="data",
)
CONTEXT = template_context(EVENT, "alerts")


@pytest.fixture
def compiler(tmp_path: Path) -> TemplateCompiler:
    (tmp_path / "case.j2").write_text('{"case": {{ event.data.caseId | json }}}\n')
    (tmp_path / "broken.j2").write_text("line one\n{% if %}\n")
    return TemplateCompiler(tmp_path)


def test_context_exposes_event_and_target(compiler: TemplateCompiler) -> None:
    template = compiler.inline(
        "{{ event.id }} {{ event.type }} {{ event.source }} {{ event.received_at }} "
        "{{ event.data.caseId }} {{ event.payload.id }} {{ event.headers['content-type'] }} "
        "{{ target.name }}",
        "inline",
    )
    assert template.render(CONTEXT) == (
        "evt-1 CASE_OPENED flagright 1970-01-01T00:00:00+00:00 C-1 evt-1 application/json alerts"
    )


def test_json_filter_makes_any_string_safe_inside_json(compiler: TemplateCompiler) -> None:
    template = compiler.inline('{"note": {{ event.data.note | json }}}', "inline")
    assert template.render(CONTEXT) == '{"note": "café \\"x\\""}'


def test_file_template_renders(compiler: TemplateCompiler) -> None:
    assert compiler.file("case.j2").render(CONTEXT) == '{"case": "C-1"}'


def test_undefined_name_is_an_error_naming_template_and_line(compiler: TemplateCompiler) -> None:
    template = compiler.inline("ok\n{{ event.data.nope }}", "targets.x.body")
    with pytest.raises(
        RenderError, match=r"^targets.x.body line 2: 'dict object' has no attribute 'nope'$"
    ):
        template.render(CONTEXT)


def test_undefined_top_level_name_is_an_error(compiler: TemplateCompiler) -> None:
    with pytest.raises(RenderError, match="'payload' is undefined"):
        compiler.inline("{{ payload }}", "t").render(CONTEXT)


def test_sandbox_refuses_unsafe_attribute_access(compiler: TemplateCompiler) -> None:
    template = compiler.inline("{{ event.id.__class__.__mro__ }}", "t")
    with pytest.raises(RenderError, match="unsafe"):
        template.render(CONTEXT)


def test_missing_template_file_names_the_directory(
    compiler: TemplateCompiler, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=rf'^"case2.j2" not found in {tmp_path.name}/$'):
        compiler.file("case2.j2")


def test_syntax_error_names_the_line(compiler: TemplateCompiler) -> None:
    with pytest.raises(ValueError, match=r'^"broken.j2" line 2: Expected an expression'):
        compiler.file("broken.j2")
