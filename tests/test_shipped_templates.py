"""The shipped templates: `templates/slack/<sender>.json.j2` and `templates/http/envelope.json.j2`.

Each is rendered as relay renders it (the sample serialised as its sender sends it, read by the
sender's reader, turned into an Event, rendered with the target context) against every shipped
sample and against hand-made edge cases: hostile text (quotes, newlines, `<`, `&`, non-ASCII),
missing optional fields, very long values, unknown event types. A Slack message must be JSON
that `check_message` takes as it is, stay within Block Kit's limits, show the event's key id,
and never carry user text unescaped into mrkdwn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import preview
from relay.events import Event, template_context
from relay.filters import format_time, slack_escape
from relay.render import TemplateCompiler
from relay.samples import Sample, sample, samples
from relay.send import serialise
from relay.targets.slack import check_message

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
COMPILER = TemplateCompiler(TEMPLATES)
SLACK_TEMPLATES = {
    "flagright": "slack/flagright.json.j2",
    "flagsmith": "slack/flagsmith.json.j2",
    "flipt": "slack/flipt.json.j2",
}
ENVELOPE = "http/envelope.json.j2"
RECEIVED_AT = 1731404490.0  # 2024-11-12 09:41:30 UTC

HOSTILE = 'He said "hi" <script>alert(1)</script> & left\nline two: Grüße ✓'
ESCAPED_SCRIPT = "&lt;script&gt;"
# In mrkdwn every `&` must start one of the three entities Slack decodes.
BARE_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")

FLAGRIGHT_TYPES = frozenset(
    {
        "CASE_OPENED",
        "CASE_CLOSED",
        "CASE_ESCALATED",
        "CASE_INTERIM_STATUS_UPDATE",
        "ALERT_OPENED",
        "ALERT_CLOSED",
        "ALERT_ESCALATED",
        "ALERT_INTERIM_STATUS_UPDATE",
        "USER_STATE_UPDATED",
        "KYC_STATUS_UPDATED",
        "TRANSACTION_STATUS_UPDATED",
        "PEP_STATUS_UPDATED",
        "SANCTIONS_STATUS_UPDATED",
        "ADVERSE_MEDIA_STATUS_UPDATED",
        "USER_TAGS_UPDATED",
        "USER_TAGS_DELETED",
        "CRA_RISK_LEVEL_UPDATED",
        "LIST_UPDATED",
        "BATCH_COMPLETED",
    }
)
GENERIC_HEADERS = {
    "flagright": ":bell: Flagright event",
    "flagsmith": ":bell: Flagsmith event",
    "flipt": ":triangular_flag_on_post: Flipt Event",
}


# -- rendering as relay does -----------------------------------------------------------------


def build_event(sender: str, payload: dict[str, Any]) -> Event:
    """The Event relay stores for this payload: the sender's bytes, read by its reader."""
    return preview.build_event(sender, sender, json.loads(serialise(sender, payload)), RECEIVED_AT)


def render(template: str, event: Event) -> str:
    return COMPILER.file(template).render(template_context(event, "slack"))


def slack_message(sender: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Render the sender's Slack template and check the message is one Slack takes."""
    rendered = render(SLACK_TEMPLATES[sender], build_event(sender, payload))
    message = json.loads(rendered)
    assert isinstance(message, dict)
    body = rendered.encode()
    assert check_message(body) is body  # accepted as it is: nothing had to be cut
    check_blocks(message)
    return message


def check_blocks(message: dict[str, Any]) -> None:
    text = message["text"]
    assert isinstance(text, str)
    assert text.strip()
    blocks = message["blocks"]
    assert isinstance(blocks, list)
    assert 1 <= len(blocks) <= 50
    assert blocks[0]["type"] == "header"
    assert blocks[-1]["type"] == "context"
    for block in blocks:
        assert isinstance(block, dict)
        kind = block.get("type")
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        elif kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] == "mrkdwn"
                assert 0 < len(block["text"]["text"]) <= 3000
            if "fields" in block:
                assert 1 <= len(block["fields"]) <= 10
                for field in block["fields"]:
                    assert field["type"] == "mrkdwn"
                    assert 0 < len(field["text"]) <= 2000
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= 10
            for element in block["elements"]:
                assert element["type"] == "mrkdwn"
                assert 0 < len(element["text"]) <= 3000
        else:
            pytest.fail(f"unexpected block type {kind!r}")


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def all_text(message: dict[str, Any]) -> str:
    return "\n".join(strings_in(message))


def header_of(message: dict[str, Any]) -> str:
    text: str = message["blocks"][0]["text"]["text"]
    return text


def section_texts(message: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in message["blocks"] if b["type"] == "section" and "text" in b]


def assert_escaped(message: dict[str, Any]) -> None:
    """No raw `<` or `>` and no bare `&` anywhere: all of it is mrkdwn or plain text."""
    for text in strings_in(message):
        assert "<" not in text, text
        assert ">" not in text, text
        assert not BARE_AMPERSAND.search(text), text


# -- what each event is about ----------------------------------------------------------------


def flagright_key_id(payload: dict[str, Any]) -> str:
    """The case, alert, transaction, list or batch id, else the user id, else the event id."""
    raw_data = payload.get("data")
    data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
    raw_case = data.get("caseObject")
    case_object: dict[str, Any] = raw_case if isinstance(raw_case, dict) else {}
    by_prefix = {
        "CASE_": data.get("caseId", case_object.get("caseId")),
        "ALERT_": data.get("alertId"),
        "TRANSACTION_": data.get("transactionId"),
        "LIST_": data.get("listId"),
        "BATCH_": data.get("batchId"),
    }
    event_type = str(payload["type"])
    key = next(
        (value for prefix, value in by_prefix.items() if event_type.startswith(prefix)),
        data.get("userId"),
    )
    return str(key) if key is not None else str(payload["id"])


def flagsmith_key_id(payload: dict[str, Any]) -> str:
    if "event_type" not in payload:
        return str(payload["identity"])
    data: dict[str, Any] = payload["data"]
    event_type = payload["event_type"]
    if event_type in ("FLAG_UPDATED", "FLAG_DELETED"):
        state = data.get("new_state") or data["previous_state"]
        return str(state["feature"]["name"])
    if event_type == "NEW_VERSION_PUBLISHED":
        return str(data["uuid"])
    if event_type == "AUDIT_LOG_CREATED":
        return str(data["log"])
    return str(event_type)


def flipt_key_id(payload: dict[str, Any]) -> str:
    obj: dict[str, Any] = payload["payload"]
    for name in ("key", "id", "io.flipt.auth.token.name"):
        if name in obj:
            return str(obj[name])
    raise AssertionError(f"no key in {obj}")


KEY_IDS = {"flagright": flagright_key_id, "flagsmith": flagsmith_key_id, "flipt": flipt_key_id}


def salted(value: Any, salt: str = HOSTILE) -> Any:
    """Every string in `value` with `salt` appended."""
    if isinstance(value, str):
        return value + salt
    if isinstance(value, dict):
        return {key: salted(item, salt) for key, item in value.items()}
    if isinstance(value, list):
        return [salted(item, salt) for item in value]
    return value


def with_hostile_text(sender: str, payload: dict[str, Any], salt: str = HOSTILE) -> dict[str, Any]:
    """The sender's data (and Flagright's acting account) full of text that could break out."""
    result = dict(payload)
    if sender == "flipt":
        result["payload"] = salted(payload["payload"], salt)
    elif "data" in payload:
        result["data"] = salted(payload["data"], salt)
    else:  # Flagsmith's identity integration: the whole payload is the data
        result = salted(payload, salt)
    if sender == "flagright":
        result["account"] = "analyst@example.com" + salt
    return result


# Every shipped sample of every sender (each sender has a Slack template).
SAMPLES = [
    pytest.param(sender, s, id=f"{sender}-{s.name}")
    for sender in SLACK_TEMPLATES
    for s in samples(sender)
]


# -- every sample ----------------------------------------------------------------------------


@pytest.mark.parametrize(("sender", "s"), SAMPLES)
def test_every_sample_renders_a_valid_slack_message_with_its_key_id(sender: str, s: Sample) -> None:
    message = slack_message(sender, s.payload)
    assert KEY_IDS[sender](s.payload) in all_text(message)
    assert header_of(message) != GENERIC_HEADERS[sender]  # a message made for this type
    assert_escaped(message)


@pytest.mark.parametrize(("sender", "s"), SAMPLES)
def test_user_text_is_escaped_and_kept_intact(sender: str, s: Sample) -> None:
    message = slack_message(sender, with_hostile_text(sender, s.payload))
    text = all_text(message)
    assert ESCAPED_SCRIPT in text
    assert "<script>" not in text
    assert '"hi"' in text  # quotes survive the JSON round trip
    assert "Grüße ✓" in text  # and non-ASCII text
    assert KEY_IDS[sender](s.payload) in text  # the id is still there, followed by the escape
    assert_escaped(message)


def test_every_flagright_type_has_a_sample() -> None:
    assert {str(s.payload["type"]) for s in samples("flagright")} == FLAGRIGHT_TYPES


@pytest.mark.parametrize("event_type", sorted(FLAGRIGHT_TYPES))
def test_flagright_type_without_details_still_renders(event_type: str) -> None:
    payload = {"id": "evt-empty", "type": event_type, "data": {}, "createdTimestamp": 1731404487301}
    message = slack_message("flagright", payload)
    assert header_of(message) != GENERIC_HEADERS["flagright"]
    assert "evt-empty" in all_text(message)
    assert "_This event carries no details._" in section_texts(message)


# -- Flagright -------------------------------------------------------------------------------


def test_flagright_manual_transaction_status_shows_reasons_comment_account_and_time() -> None:
    payload = sample("flagright", "TRANSACTION_STATUS_UPDATED").payload
    message = slack_message("flagright", payload)
    text = all_text(message)
    assert "*Reasons*\nFalse positive" in section_texts(message)
    comment = payload["data"]["comment"]
    assert "München" in comment
    assert f"*Comment*\n{comment}" in section_texts(message)
    assert "analyst@example.com" in text
    assert "ALLOW" in message["text"]
    assert format_time(payload["createdTimestamp"]) in text
    assert "triggered by manual action" in text


def test_flagright_async_transaction_status_has_reasons_as_a_string() -> None:
    payload = sample("flagright", "TRANSACTION_STATUS_UPDATED.async").payload
    assert isinstance(payload["data"]["reasons"], str)
    message = slack_message("flagright", payload)
    assert "*Reasons*\nStatus updated by async rule" in section_texts(message)
    assert "DEPOSIT" in all_text(message)


def test_flagright_case_opened_reads_the_case_id_from_the_case_object() -> None:
    payload = sample("flagright", "CASE_OPENED").payload
    assert "caseId" not in payload["data"]
    message = slack_message("flagright", payload)
    assert "`C-1042`" in message["text"]
    assert "*Alerts*\n• `A-2291` Transaction amount too high (FLAG)" in section_texts(message)


def test_flagright_case_id_at_the_top_wins_over_the_case_object() -> None:
    payload = sample("flagright", "CASE_OPENED").payload
    payload["data"]["caseId"] = "C-TOP"
    assert "`C-TOP`" in slack_message("flagright", payload)["text"]


def test_flagright_alert_shows_rule_and_other_reason() -> None:
    message = slack_message("flagright", sample("flagright", "ALERT_ESCALATED").payload)
    text = all_text(message)
    assert "Transaction amount too high `R-2`" in text
    assert "Transaction amount is &gt;= 10,000.00 EUR" in text
    assert "*Reasons*\nOther (Needs source-of-funds review)" in section_texts(message)


def test_flagright_hostile_comment_is_escaped_exactly_once() -> None:
    payload = sample("flagright", "CASE_CLOSED").payload
    payload["data"]["comment"] = HOSTILE
    message = slack_message("flagright", payload)
    assert "*Comment*\n" + slack_escape(HOSTILE) in section_texts(message)


def test_flagright_unknown_type_renders_a_generic_message_with_its_data() -> None:
    payload = {
        "id": "evt-new",
        "type": "WIDGET_<b>_EXPLODED",
        "data": {"widgetId": "W-1", "note": HOSTILE},
        "createdTimestamp": 1731404487301,
        "triggeredBy": "SYSTEM",
    }
    message = slack_message("flagright", payload)
    text = all_text(message)
    assert header_of(message) == GENERIC_HEADERS["flagright"]
    assert "`WIDGET_&lt;b&gt;_EXPLODED`" in message["text"]
    assert "W-1" in text
    assert ESCAPED_SCRIPT in text
    assert_escaped(message)


@pytest.mark.parametrize("data", [None, [], "text", 42])
def test_flagright_data_that_is_not_an_object_still_renders(data: Any) -> None:
    payload = {"id": "evt-odd", "type": "CASE_CLOSED", "data": data}
    message = slack_message("flagright", payload)
    assert "evt-odd" in all_text(message)


def test_flagright_without_optional_envelope_fields_uses_the_receive_time() -> None:
    payload = {"id": "evt-1", "type": "USER_STATE_UPDATED", "data": {"userId": "U-1"}}
    message = slack_message("flagright", payload)
    text = all_text(message)
    assert format_time(RECEIVED_AT) in text
    assert "triggered by" not in text


def test_flagright_long_and_many_values_stay_within_slack_limits() -> None:
    payload = {
        "id": "evt-long",
        "type": "CASE_ESCALATED",
        "data": {
            "caseId": "C-" + "9" * 500,
            "reasons": ["reason & <more> " * 50] * 40,
            "comment": "x<" * 5000,
            "transactionIds": [f"T-{n}" for n in range(200)],
            "status": "ESCALATED",
        },
        "createdTimestamp": 1731404487301,
        "account": "a" * 5000,
    }
    message = slack_message("flagright", payload)
    assert "+195 more" in all_text(message)
    list_payload = {
        "id": "evt-list",
        "type": "LIST_UPDATED",
        "data": {"listId": "L-1", "action": "SET", "items": [{"key": f"K{n}"} for n in range(80)]},
    }
    assert "+70 more" in all_text(slack_message("flagright", list_payload))


# -- Flagsmith -------------------------------------------------------------------------------


def test_flagsmith_flag_updated_shows_old_and_new_state() -> None:
    message = slack_message("flagsmith", sample("flagsmith", "FLAG_UPDATED").payload)
    change = next(t for t in section_texts(message) if t.startswith("*Change*"))
    assert "*Enabled:* :white_circle: off → *:large_green_circle: on*" in change
    assert "*Value:* `control` _(unchanged)_" in change
    assert "• `variant_a`: 25% (was 10%)" in all_text(message)
    assert "Production" in message["text"]
    assert "maria.lopez@example.com" in all_text(message)


def test_flagsmith_flag_deleted_shows_the_deleted_state_and_segment_override() -> None:
    message = slack_message("flagsmith", sample("flagsmith", "FLAG_DELETED").payload)
    text = all_text(message)
    assert "*Was value:* `Free shipping until 31 Dec`" in text
    assert "`eu_customers` (priority 0)" in text


def test_flagsmith_identity_override_is_shown() -> None:
    payload = sample("flagsmith", "FLAG_UPDATED").payload
    payload["data"]["new_state"]["identity"] = 501
    payload["data"]["new_state"]["identity_identifier"] = "user_8213"
    assert "`user_8213`" in all_text(slack_message("flagsmith", payload))


def test_flagsmith_audit_log_shows_the_log_line_author_and_project() -> None:
    message = slack_message("flagsmith", sample("flagsmith", "AUDIT_LOG_CREATED").payload)
    text = all_text(message)
    log = "Flag state / Remote Config value updated for feature: checkout_redesign"
    assert f"*Log*\n{log}" in section_texts(message)
    assert "Storefront" in text
    assert "2024-11-12 09:41:27 UTC" in text


def test_flagsmith_identity_flags_lists_enabled_flags_and_segments() -> None:
    message = slack_message("flagsmith", sample("flagsmith", "IDENTITY_FLAGS").payload)
    assert "1 of 2 flags enabled" in message["text"]
    assert "*Enabled flags*\n• `checkout_redesign` = `variant_a`" in section_texts(message)
    assert "*Segments*\n`eu_customers`" in section_texts(message)


@pytest.mark.parametrize(
    "payload",
    [
        {"event_type": "FLAG_UPDATED", "data": {}},
        {"event_type": "FLAG_UPDATED", "data": {"new_state": {"enabled": True}}},
        {"event_type": "FLAG_DELETED", "data": {"new_state": None, "previous_state": None}},
        {"event_type": "FLAG_UPDATED", "data": {"new_state": {"feature": "odd"}, "timestamp": ""}},
        {"event_type": "NEW_VERSION_PUBLISHED", "data": {}},
        {"event_type": "NEW_VERSION_PUBLISHED", "data": {"feature_states": [{}, "odd"]}},
        {"event_type": "AUDIT_LOG_CREATED", "data": {"log": "only a log line"}},
        {"event_type": "AUDIT_LOG_CREATED", "data": {"created_date": "yesterday"}},
        {"identity": "u-1", "traits": [], "flags": []},
        {"identity": "u-2", "traits": [{}], "flags": [{"enabled": True}, None], "segments": None},
    ],
    ids=repr,
)
def test_flagsmith_missing_optional_fields_still_render(payload: dict[str, Any]) -> None:
    message = slack_message("flagsmith", payload)
    assert header_of(message) != GENERIC_HEADERS["flagsmith"]


def test_flagsmith_unknown_type_renders_a_generic_message_with_its_data() -> None:
    payload = {"event_type": "SEGMENT_<i>_CHANGED", "data": {"segment": "beta", "note": HOSTILE}}
    message = slack_message("flagsmith", payload)
    assert header_of(message) == GENERIC_HEADERS["flagsmith"]
    assert "`SEGMENT_&lt;i&gt;_CHANGED`" in message["text"]
    assert ESCAPED_SCRIPT in all_text(message)
    assert_escaped(message)


def test_flagsmith_many_identity_flags_stay_within_slack_limits() -> None:
    flags = [
        {"enabled": n % 2 == 0, "feature": {"name": f"feature_{n}"}, "feature_state_value": n}
        for n in range(500)
    ]
    payload = {"identity": "u-many", "traits": [], "flags": flags, "segments": []}
    message = slack_message("flagsmith", payload)
    assert "250 of 500 flags enabled" in message["text"]
    assert "+230 more" in all_text(message)


# -- Flipt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("s", samples("flipt"), ids=lambda s: s.name)
def test_flipt_payload_is_pretty_json_in_a_code_block(s: Sample) -> None:
    message = slack_message("flipt", s.payload)
    pretty = json.dumps(s.payload["payload"], indent=2, ensure_ascii=False)
    assert f"*Payload*\n```\n{slack_escape(pretty)}\n```" in section_texts(message)
    assert header_of(message).endswith(f"Flipt Event: {s.payload['type']}/{s.payload['action']}")


def test_flipt_non_ascii_payload_stays_readable() -> None:
    payload = sample("flipt", "flag-created").payload
    description = payload["payload"]["description"]
    assert "Café" in description
    message = slack_message("flipt", payload)
    assert f'"description": "{description}"' in all_text(message)


def test_flipt_denied_event_without_payload() -> None:
    payload = sample("flipt", "flag-created").payload
    payload.update(status="denied", payload=None)
    message = slack_message("flipt", payload)
    assert "denied" in message["text"]
    assert any(t.startswith(":no_entry: *Denied:*") for t in section_texts(message))


def test_flipt_missing_metadata_and_timestamp_still_render() -> None:
    payload = {"type": "flag", "action": "deleted", "payload": {"key": "gone"}}
    message = slack_message("flipt", payload)
    assert "`gone`" in message["text"]
    assert format_time(RECEIVED_AT) in all_text(message)


def test_flipt_actor_is_shown_escaped() -> None:
    payload = sample("flipt", "flag-created").payload
    payload["metadata"]["actor"] = {"email": "a&b@example.com", "name": "<Ann>", "ip": "10.0.0.1"}
    text = all_text(slack_message("flipt", payload))
    assert "&lt;Ann&gt; (a&amp;b@example.com) from `10.0.0.1`" in text


def test_flipt_unknown_type_keeps_free_text_out_of_the_header() -> None:
    payload = {"type": "widget<x>", "action": "exploded", "payload": {"id": "w-1", "n": HOSTILE}}
    message = slack_message("flipt", payload)
    assert header_of(message) == GENERIC_HEADERS["flipt"]
    assert "*Flipt Event:* widget&lt;x&gt;/exploded" in section_texts(message)
    assert ESCAPED_SCRIPT in all_text(message)
    assert_escaped(message)


def test_flipt_large_payload_is_clipped_within_slack_limits() -> None:
    payload = sample("flipt", "rule-created").payload
    payload["payload"]["distributions"] = [{"id": f"d-{n}", "rollout": n} for n in range(500)]
    message = slack_message("flipt", payload)
    code_block = next(t for t in section_texts(message) if t.startswith("*Payload*"))
    assert code_block.endswith("…\n```")


# -- clipping escaped text ------------------------------------------------------------------

# Escaped, 13 characters per 3: long enough to be clipped at every limit the templates use.
ENTITY_FLOOD = "&<>" * 1000


@pytest.mark.parametrize(("sender", "s"), SAMPLES)
def test_clipped_user_text_never_ends_inside_an_escaped_character(sender: str, s: Sample) -> None:
    for shift in range(13):  # every position within `&amp;&lt;&gt;` for each clip
        message = slack_message(
            sender, with_hostile_text(sender, s.payload, "x" * shift + ENTITY_FLOOD)
        )
        assert_escaped(message)


# -- the HTTP envelope -----------------------------------------------------------------------


@pytest.mark.parametrize(("sender", "s"), SAMPLES)
def test_http_envelope_carries_the_event(sender: str, s: Sample) -> None:
    for payload in (s.payload, with_hostile_text(sender, s.payload)):
        event = build_event(sender, payload)
        envelope = json.loads(render(ENVELOPE, event))
        assert envelope == {
            "id": event.id,
            "type": event.type,
            "source": sender,
            "received_at": "2024-11-12T09:41:30+00:00",
            "created_at": event.template_context()["created_at"],
            "data": event.data,  # exactly, hostile text included
        }
        assert KEY_IDS[sender](s.payload) in json.dumps(envelope, ensure_ascii=False)


def test_http_envelope_created_at_is_null_when_the_sender_gives_no_time() -> None:
    event = build_event("flagsmith", sample("flagsmith", "IDENTITY_FLAGS").payload)
    assert json.loads(render(ENVELOPE, event))["created_at"] is None
