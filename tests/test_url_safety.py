"""Event data cannot reshape an outbound URL: each value stays one path segment or query value.

The daemon tests read the request target as it came on the wire (`raw_path`), since a decoded
path no longer shows where one segment ended.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from relay.cli import main
from relay.errors import ConfigError, RenderError
from relay.events import Delivery, Event, template_context
from relay.loading import load_config
from relay.render import TemplateCompiler
from relay.targets.base import BodyRenderer
from relay.targets.http import HttpRequestBuilder, wire_origin
from relay.urltemplate import (
    UrlText,
    encode_value,
    rendered_url_problem,
    url_encode,
    url_raw,
    url_text_problem,
)
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.receiver import Receiver

URL_TEMPLATE = "/ok/path/{{ event.data.x%s }}?v={{ event.data.y%s }}&fixed=1"
FAST_RETRY = "{initial: 10ms, multiplier: 2, max_interval: 50ms, max_elapsed: 30s}"

# A hostile value and what it must become: one path segment, one query value.
HOSTILE = {
    "../../admin": "..%2F..%2Fadmin",
    "a/b": "a%2Fb",
    "x&fixed=0&admin=1": "x%26fixed%3D0%26admin%3D1",
    "#frag": "%23frag",
    "?q": "%3Fq",
    "%2e%2e%2f": "%252e%252e%252f",
    "%00": "%2500",
    "\x00": "%00",
    "a b\tc": "a%20b%09c",
    "line\r\nX-Injected: 1": "line%0D%0AX-Injected%3A%201",
    "café ☃ \u202e": "caf%C3%A9%20%E2%98%83%20%E2%80%AE",
    "1+1=2": "1%2B1%3D2",
    "...": "...",
    ";jsessionid=x": "%3Bjsessionid%3Dx",
    "\\..\\admin": "%5C..%5Cadmin",
    "Order-1_a.b~c": "Order-1_a.b~c",
}


# -- the pure encoding -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "encoded"), HOSTILE.items())
def test_encode_value_leaves_only_unreserved_characters(value: str, encoded: str) -> None:
    assert encode_value(value) == encoded
    assert unquote(encoded) == value


@pytest.mark.parametrize(("value", "encoded"), [(".", "%2E"), ("..", "%2E%2E")])
def test_a_value_that_is_a_dot_segment_is_encoded(value: str, encoded: str) -> None:
    assert encode_value(value) == encoded


def test_encode_value_writes_non_strings_as_jinja_prints_them() -> None:
    assert [encode_value(v) for v in (7, 1.5, True, None)] == ["7", "1.5", "True", "None"]


def test_urlencode_is_the_same_single_value_encoding_and_marks_it_encoded() -> None:
    assert url_encode("../../admin") == "..%2F..%2Fadmin"
    assert url_encode({"a b": "c&d", "e": 1}) == "a%20b=c%26d&e=1"
    assert url_encode([("k", "/")]) == "k=%2F"
    assert isinstance(url_encode("x"), UrlText)  # the URL environment does not encode it again
    assert isinstance(url_raw("a/b"), UrlText)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("/a b", "' ' is not allowed in a URL (percent-encode it: %20)"),
        ("/a\r\n", "'\\r' is not allowed in a URL (percent-encode it: %0D)"),
        ("/caf\u00e9", "'\\xe9' is not allowed in a URL (percent-encode it: %C3%A9)"),
        ("/\ud800", "'\\ud800' is not allowed in a URL (percent-encode it: %ED%A0%80)"),
        ("/a%zz", '"%" must start a %XX escape (a literal "%" is %25)'),
        ("/a?b=%", '"%" must start a %XX escape (a literal "%" is %25)'),
    ],
)
def test_url_text_problem_names_what_cannot_go_on_the_wire(text: str, problem: str) -> None:
    assert url_text_problem(text) == problem


def test_url_text_problem_accepts_every_character_a_url_may_carry() -> None:
    text = "/a-b._~/c!$&'()*+,;=:@/d%2F?q[]=1&r=%20#f"
    assert url_text_problem(text) is None
    assert rendered_url_problem(text) is None


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        (
            "/a/%2E%2E",
            'a value made the path segment "%2E%2E", which servers resolve as ".."'
            " (one step up the path)",
        ),
        (
            "/a/%2e/b",
            'a value made the path segment "%2e", which servers resolve as "."'
            " (dropped from the path)",
        ),
        (
            "/a/.%2E?v=1",
            'a value made the path segment ".%2E", which servers resolve as ".."'
            " (one step up the path)",
        ),
        (
            "/%2E%2E#f",
            'a value made the path segment "%2E%2E", which servers resolve as ".."'
            " (one step up the path)",
        ),
    ],
)
def test_a_rendered_dot_segment_is_refused(path: str, problem: str) -> None:
    assert rendered_url_problem(path) == problem


@pytest.mark.parametrize("path", ["/a/../b", "/a/x%2E%2E", "/a?v=%2E%2E", "/a/...%2E"])
def test_literal_dots_and_dots_inside_a_segment_or_query_pass(path: str) -> None:
    assert rendered_url_problem(path) is None


# -- compiled URL templates ------------------------------------------------------------------


def render_url(source: str, data: Any, tmp_path: Path) -> str:
    template = TemplateCompiler(tmp_path).url(source, "targets.out.url")
    return template.render(template_context(event_with(data), "out"))


def event_with(data: Any, event_id: str = "e-1") -> Event:
    payload = {"id": event_id, "type": "t", "data": data}
    body = json.dumps(payload).encode()
    return Event("app", event_id, "t", 0.0, body, payload, data_key="data")


@pytest.mark.parametrize("filter_", ["", " | urlencode"])
def test_values_are_encoded_and_the_templates_own_text_kept(filter_: str, tmp_path: Path) -> None:
    source = URL_TEMPLATE % (filter_, filter_)
    data = {"x": "../../admin", "y": "x&fixed=0&admin=1"}
    assert render_url(source, data, tmp_path) == (
        "/ok/path/..%2F..%2Fadmin?v=x%26fixed%3D0%26admin%3D1&fixed=1"
    )


def test_url_raw_inserts_the_value_as_it_is(tmp_path: Path) -> None:
    source = "/api/{{ event.data.route | url_raw }}"
    assert render_url(source, {"route": "v2/items?all=1"}, tmp_path) == "/api/v2/items?all=1"


@pytest.mark.parametrize(
    "source",
    [
        "/{{ (event.data.x | url_raw) ~ '' }}",
        "/{{ event.data.x | url_raw | lower }}",
        "/{{ event.data.x | url_raw | replace('/', '/') }}",
        "/{% set v = event.data.x | url_raw %}{{ v ~ '' }}",
    ],
)
def test_anything_done_to_a_raw_value_is_encoded_again(source: str, tmp_path: Path) -> None:
    assert render_url(source, {"x": "a/b"}, tmp_path) == "/a%2Fb"


@pytest.mark.parametrize(
    "value", ["{{ event.data | url_raw }}", "url_raw", {"__class__": "UrlText"}, ["a/b"]]
)
def test_event_data_cannot_reach_the_opt_out(value: Any, tmp_path: Path) -> None:
    rendered = render_url("/{{ event.data.x }}", {"x": value}, tmp_path)
    assert rendered == "/" + encode_value(value)
    assert rendered.count("/") == 1


def test_a_missing_name_fails_as_in_every_template(tmp_path: Path) -> None:
    with pytest.raises(
        RenderError, match=r"targets.out.url line 1: 'dict object' has no attribute 'x'"
    ):
        render_url("/{{ event.data.x }}", {}, tmp_path)


def test_a_raw_value_the_url_cannot_carry_fails_naming_the_url(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as caught:
        render_url("/{{ event.data.x | url_raw }}", {"x": "a\r\nHost: evil"}, tmp_path)
    assert str(caught.value) == (
        "targets.out.url: the rendered URL cannot be sent:"
        " '\\r' is not allowed in a URL (percent-encode it: %0D)"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/a b/{{ x }}", "' ' is not allowed in a URL (percent-encode it: %20)"),
        ("/é/{{ x }}", "'\\xe9' is not allowed in a URL (percent-encode it: %C3%A9)"),
        ("/{{ x }}?p=100%", '"%" must start a %XX escape (a literal "%" is %25)'),
    ],
)
def test_literal_text_unfit_for_a_url_is_refused_when_compiled(
    source: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TemplateCompiler(tmp_path).url(source, "targets.out.url")


def test_url_raw_exists_only_in_url_templates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No filter named 'url_raw'"):
        TemplateCompiler(tmp_path).inline("{{ event.id | url_raw }}", "targets.out.body")


def test_the_origin_goes_on_the_wire_encoded_and_the_path_as_rendered(tmp_path: Path) -> None:
    assert wire_origin("https://bücher.example") == "https://xn--bcher-kva.example"
    path = TemplateCompiler(tmp_path).url("/b/{{ event.data.x }}", "targets.out.url")
    builder = HttpRequestBuilder(
        "out", "POST", "https://bücher.example", path, {}, BodyRenderer(None), None
    )
    delivery = Delivery(1, "out", 1, 0.0, event_with({"x": "ü/.."}))
    assert builder.build(delivery, 0.0).url == "https://xn--bcher-kva.example/b/%C3%BC%2F.."


# -- config ----------------------------------------------------------------------------------


def config_with_url(url: str, body: str = "") -> str:
    return f"""\
store: "sqlite:///relay.db"
sources:
  app: {{path: /hooks/app}}
targets:
  out:
    kind: http
    url: "{url}"
{body}
routes:
  - targets: [out]
"""


def test_config_refuses_a_plain_url_whose_text_cannot_be_sent(write_config: ConfigWriter) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(config_with_url("http://127.0.0.1:9/a b")), {})
    assert caught.value.problems == [
        "targets.out.url: ' ' is not allowed in a URL (percent-encode it: %20)"
    ]


def test_config_refuses_a_host_the_target_could_not_send_to(write_config: ConfigWriter) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(config_with_url("http://a\u202eb.example/in")), {})
    assert caught.value.problems == [
        'targets.out.url: invalid host in "http://a\u202eb.example/..."'
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (
            "http://127.0.0.1:9/a b/{{ event.id }}",
            "targets.out.url: ' ' is not allowed in a URL (percent-encode it: %20)",
        ),
        (
            "http://127.0.0.1:9/{{ event.id }}?p=5%",
            'targets.out.url: "%" must start a %XX escape (a literal "%" is %25)',
        ),
    ],
)
def test_check_refuses_a_url_template_whose_own_text_cannot_be_sent(
    url: str, problem: str, write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(config_with_url(url))
    assert main(["check", "-c", str(path)]) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [f"  {problem}"]


def test_check_takes_url_raw_in_a_url_and_refuses_it_in_a_header(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "http://127.0.0.1:9/{{ event.data.route | url_raw }}"
    assert main(["check", "-c", str(write_config(config_with_url(url)))]) == 0
    capsys.readouterr()
    headers = '    headers: {X-Route: "{{ event.data.route | url_raw }}"}'
    assert main(["check", "-c", str(write_config(config_with_url(url, headers)))]) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  targets.out.headers.X-Route: line 1: No filter named 'url_raw'."
    ]


# -- through the daemon, to a real receiver --------------------------------------------------


async def start(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver, url_rest: str
) -> Relay:
    config = config_with_url(receiver.url + url_rest, f"    retry: {FAST_RETRY}")
    return await start_relay(write_config(config))


async def post_values(relay: Relay, values: list[str]) -> None:
    for i, value in enumerate(values):
        event = {"id": f"e-{i}", "type": "t", "data": {"x": value, "y": value}}
        assert (await relay.post("/hooks/app", event)).status == 202


@pytest.mark.parametrize("filter_", ["", " | urlencode"])
async def test_hostile_values_reach_the_receiver_as_one_segment_and_one_query_value(
    filter_: str, write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver, URL_TEMPLATE % (filter_, filter_))
    values = list(HOSTILE)
    await post_values(relay, values)
    received = await receiver.wait_for(len(values))
    by_event = {got.headers["Relay-Event-Id"]: got for got in received}
    for i, value in enumerate(values):
        got, encoded = by_event[f"e-{i}"], HOSTILE[value]
        assert got.raw_path == f"/ok/path/{encoded}?v={encoded}&fixed=1", value
        path, _, _ = got.raw_path.partition("?")
        assert [unquote(s) for s in path.split("/")] == ["", "ok", "path", value]
        assert got.query_items == (("v", value), ("fixed", "1")), value
    assert len(await relay.wait_for_state("delivered", len(values))) == len(values)


async def test_a_dot_value_is_one_query_value(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver, "/ok?v={{ event.data.y }}&fixed=1")
    await post_values(relay, [".", ".."])
    received = await receiver.wait_for(2)
    by_event = {got.headers["Relay-Event-Id"]: got for got in received}
    assert by_event["e-0"].raw_path == "/ok?v=%2E&fixed=1"
    assert by_event["e-1"].raw_path == "/ok?v=%2E%2E&fixed=1"
    assert by_event["e-1"].query_items == (("v", ".."), ("fixed", "1"))


@pytest.mark.parametrize(
    ("url_rest", "value", "reason"),
    [
        (
            "/ok/path/{{ event.data.x }}",
            "..",
            'a value made the path segment "%2E%2E", which servers resolve as ".."',
        ),
        (
            "/ok/path/{{ event.data.x | urlencode }}/more",
            ".",
            'a value made the path segment "%2E", which servers resolve as "."',
        ),
        (
            "/ok/path/{{ event.data.x | url_raw }}",
            "a b\r\nHost: evil",
            "' ' is not allowed in a URL (percent-encode it: %20)",
        ),
    ],
)
async def test_a_url_that_cannot_be_sent_fails_at_once_and_sends_nothing(
    url_rest: str,
    value: str,
    reason: str,
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
) -> None:
    relay = await start(write_config, start_relay, receiver, url_rest)
    await post_values(relay, [value])
    (record,) = await relay.wait_for_state("dead")
    assert record.attempts == 1
    assert record.last_error is not None
    assert record.last_error.startswith("targets.out.url: the rendered URL cannot be sent: ")
    assert reason in record.last_error
    assert receiver.received == []


async def test_url_raw_sends_trusted_text_as_it_is(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver, "/api/{{ event.data.x | url_raw }}")
    await post_values(relay, ["v2/items/../all?page=2"])
    (got,) = await receiver.wait_for(1)
    assert got.raw_path == "/api/v2/items/../all?page=2"
    assert got.query_items == (("page", "2"),)


def test_render_prints_the_url_the_daemon_sends(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = "http://127.0.0.1:9" + URL_TEMPLATE % ("", " | urlencode")
    path = write_config(config_with_url(url))
    event = tmp_path / "event.json"
    data = {"x": "../../admin", "y": "x&fixed=0&admin=1#f"}
    event.write_text(json.dumps({"id": "e-1", "type": "t", "data": data}))
    assert main(["render", "-c", str(path), "--target", "out", "--source", "app", str(event)]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line == (
        "POST http://127.0.0.1:9/ok/path/..%2F..%2Fadmin?v=x%26fixed%3D0%26admin%3D1%23f&fixed=1"
    )
