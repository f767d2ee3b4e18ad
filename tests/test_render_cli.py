"""`relay render` and `relay check` rendering templates against the shipped samples."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from relay import samples
from relay.cli import main
from tests.conftest import ConfigWriter

BASE = """\
store: "sqlite:///relay.db"
sources:
  flagright:
    path: /hooks/flagright
    verify: {{scheme: flagright, secret: fr-secret}}
targets:
  audit:
    kind: http
    url: "http://127.0.0.1:9/cases/{{{{ event.type | lower }}}}"
    headers: {{Authorization: "Bearer s3cr3t-token", X-Kind: "{{{{ event.type }}}}"}}
    sign: {{scheme: hmac-sha256, secret: sign-secret}}
  slack:
    kind: slack
    url: "https://hooks.slack.com/services/T0/B0/SECRETPATH"
    template: case.j2
routes:
  - sources: [flagright]
    types: ["CASE_*"]
    targets: [slack]
{extra}
"""
GUARDED = """\
{%- set d = event.data -%}
{%- set case_id = d.caseId if d.caseId is defined
    else (d.caseObject.caseId if d.caseObject is defined else "unknown") -%}
{"text": {{ ("Case " ~ case_id ~ " " ~ event.type) | json }}}
"""
BROKEN = """\
{"text": {{ ("Case " ~ event.type) | json }},
 "blocks": [{"type": "section",
             "text": {"type": "mrkdwn", "text": {{ event.data.caseId | json }}}}]}
"""


def write(write_config: ConfigWriter, template: str, extra: str = "") -> Path:
    return write_config(BASE.format(extra=extra), {"case.j2": template})


def test_check_renders_every_matching_sample_and_passes_a_guarded_template(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(write_config, GUARDED)
    assert main(["check", "-c", str(path)]) == 0
    assert "templates rendered against the shipped samples" in capsys.readouterr().out


def test_check_reports_a_template_that_fails_for_some_types_with_its_location(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(write_config, BROKEN)
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}: 2 problem(s):",
        "  routes[0] → targets.slack: flagright sample CASE_INTERIM_STATUS_UPDATE"
        " (type CASE_INTERIM_STATUS_UPDATE): case.j2 line 3: 'dict object' has no attribute"
        " 'caseId'",
        "  routes[0] → targets.slack: flagright sample CASE_OPENED (type CASE_OPENED):"
        " case.j2 line 3: 'dict object' has no attribute 'caseId'",
    ]


def test_check_reports_invalid_json_and_a_failing_when(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = """\
  - sources: [flagright]
    types: ["USER_STATE_UPDATED"]
    when: "event.data.amount > 1"
    targets: [audit]
"""
    path = write(write_config, '{"text": {{ event.type }}}', extra)
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert (
        "routes[0] → targets.slack: flagright sample CASE_CLOSED (type CASE_CLOSED):"
        " case.j2: rendered body is not valid JSON" in err
    )
    assert (
        "routes[1].when: flagright sample USER_STATE_UPDATED (type USER_STATE_UPDATED):"
        " routes[1].when: 'dict object' has no attribute 'amount'" in err
    )


def test_render_prints_the_request_with_secrets_redacted(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(write_config, GUARDED)
    code = main(
        [
            "render",
            "-c",
            str(path),
            "--target",
            "audit",
            "--source",
            "flagright",
            "--sample",
            "CASE_CLOSED",
        ]
    )
    assert code == 0
    head, body = capsys.readouterr().out.split("\n\n", 1)
    lines = head.splitlines()
    assert lines[0] == "POST http://127.0.0.1:9/cases/case_closed"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Authorization"] == "[redacted]"
    assert headers["Relay-Signature"] == "[redacted]"
    assert headers["X-Kind"] == "CASE_CLOSED"
    assert headers["Relay-Event-Id"] == samples.sample("flagright", "CASE_CLOSED").payload["id"]
    sent = body.rstrip("\n").encode()
    assert json.loads(sent) == samples.sample("flagright", "CASE_CLOSED").payload
    assert "s3cr3t-token" not in head
    assert hmac.new(b"sign-secret", sent, hashlib.sha256).hexdigest() not in head


def test_render_slack_hides_the_webhook_path(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(write_config, GUARDED)
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps(
            {
                "id": "e1",
                "type": "CASE_CLOSED",
                "data": {"caseId": "C-9"},
                "createdTimestamp": 1,
                "triggeredBy": "MANUAL",
            }
        )
    )
    assert (
        main(["render", "-c", str(path), "--target", "slack", "--source", "flagright", str(event)])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("POST https://hooks.slack.com/[redacted]\n")
    assert "SECRETPATH" not in out
    assert out.rstrip().endswith('{"text": "Case C-9 CASE_CLOSED"}')


def test_render_reports_a_template_error(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(write_config, BROKEN)
    code = main(
        [
            "render",
            "-c",
            str(path),
            "--target",
            "slack",
            "--source",
            "flagright",
            "--sample",
            "CASE_OPENED",
        ]
    )
    assert code == 1
    assert capsys.readouterr().err == (
        "relay render: case.j2 line 3: 'dict object' has no attribute 'caseId'\n"
    )
