"""What an http target makes of an answer (relay/targets/http.py): pure, no sockets."""

from __future__ import annotations

from relay.events import Delivered, Failed, Retry
from relay.targets.http import classify_http, with_exchange


def test_a_2xx_is_delivered_without_the_answer_in_a_reason() -> None:
    assert classify_http(200, "  all\n good  ", None, 0.0) == Delivered(200)
    assert classify_http(204, "", None, 0.0) == Delivered(204)


def test_a_failure_reason_has_the_start_of_the_answer_on_one_line() -> None:
    assert classify_http(503, "busy\n  now", "7", 100.0) == Retry("HTTP 503: busy now", 503, 7.0)
    assert classify_http(400, "", None, 0.0) == Failed("HTTP 400", 400)
    long = classify_http(422, "x" * 500, None, 0.0)
    assert isinstance(long, Failed)
    assert long.reason == "HTTP 422: " + "x" * 200


def test_the_exchange_is_added_to_every_kind_of_outcome() -> None:
    delivered = with_exchange(Delivered(201), 0.25, "ok", "3")
    assert delivered == Delivered(201, duration_s=0.25, response="ok", retry_after="3")
    retry = with_exchange(Retry("HTTP 503", 503, 7.0), 0.5, "busy", "7")
    assert retry == Retry("HTTP 503", 503, 7.0, duration_s=0.5, response="busy", retry_after="7")
    failed = with_exchange(Failed("HTTP 400", 400), 0.1, "bad", None)
    assert failed == Failed("HTTP 400", 400, duration_s=0.1, response="bad")
