"""Property tests of the inbound edge, for every sender scheme.

Random and mutated bodies, headers (bytes that are not UTF-8 included), signatures, timestamps,
content lengths and encodings go to a real relay on a real socket as raw bytes. Whatever
arrives: only documented statuses, never a 5xx or a hang, an error answer is JSON with a
reason, nothing is stored unless relay answered 202, and relay still serves the next request.

relay runs on its own event loop in a thread, because hypothesis drives examples one after the
other from the test's thread; each example is one connection.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import io
import json
import socket
import threading
import time
import zlib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import samples
from relay.app import STORE, create_app
from relay.loading import load_config
from relay.server import RelayRunner
from relay.store.base import Store

T = TypeVar("T")

SECRET = "prop-secret"
WHSEC_KEY = b"property-test-key"
WHSEC = "whsec_" + base64.b64encode(WHSEC_KEY).decode()
SOCKET_TIMEOUT_S = 20.0  # a hang fails the example; no answer takes this long

CONFIG = f"""\
store: "sqlite:///relay.db"
limits: {{max_body_bytes: 4096, read_timeout: 500ms}}
sources:
  flagright: {{path: /flagright, verify: {{scheme: flagright, secret: {SECRET}}}}}
  flagsmith: {{path: /flagsmith, verify: {{scheme: flagsmith, secret: {SECRET}}}}}
  flipt: {{path: /flipt, verify: {{scheme: flipt, secret: {SECRET}}}}}
  sw: {{path: /sw, verify: {{scheme: standard-webhooks, secret: "{WHSEC}"}}}}
  hex: {{path: /hex, verify: {{scheme: hmac-sha256, secret: {SECRET}, header: X-Sig}}}}
  b64:
    path: /b64
    verify: {{scheme: hmac-sha256, secret: {SECRET}, header: X-Sig, encoding: base64,
             prefix: "sha256="}}
  open: {{path: /open}}
  open_flagright: {{path: /open-flagright, sender: flagright}}
  open_sw: {{path: /open-sw, sender: standard-webhooks}}
  allow: {{path: /allow, allow_ips: ["10.0.0.0/8"]}}
targets:
  out: {{kind: console}}
routes:
  - when: "event.created_at is none or event.created_at > '2000'"
    targets: [out]
"""

ALLOWED_STATUSES = {200, 202, 400, 401, 403, 404, 405, 408, 413, 415, 431}


class RelayThread:
    """relay on a loopback socket, on an event loop of its own in a thread."""

    def __init__(self, config_path: Path) -> None:
        self._config_path = config_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        self.call(self._start())

    async def _start(self) -> None:
        config = load_config(self._config_path)
        app = await create_app(config, out=io.StringIO())
        self._runner = RelayRunner(app, config.limits)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @property
    def store(self) -> Store:
        assert self._runner is not None
        return self._runner.app[STORE]

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(SOCKET_TIMEOUT_S)

    def counts(self) -> dict[str, int]:
        return self.call(self.store.counts())

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(SOCKET_TIMEOUT_S)
        self._loop.close()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayThread]:
    folder = tmp_path_factory.mktemp("properties")
    (folder / "templates").mkdir()
    path = folder / "relay.yaml"
    path.write_text(CONFIG)
    server = RelayThread(path)
    server.start()
    yield server
    server.stop()


# -- what is sent -----------------------------------------------------------------------------


@dataclass
class RawRequest:
    path: str
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # length | chunked | short or long (Content-Length one less or one more than the body sent)
    framing: str = "length"
    method: bytes = b"POST"

    def encode(self) -> bytes:
        head = [self.method + b" " + self.path.encode() + b" HTTP/1.1", b"Host: relay"]
        head += [b"Connection: close", *(name + b": " + value for name, value in self.headers)]
        body = self.body
        if self.framing == "chunked":
            head.append(b"Transfer-Encoding: chunked")
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        else:
            length = len(body) + {"short": -1 if body else 0, "long": 1}.get(self.framing, 0)
            head.append(b"Content-Length: %d" % length)
        return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


def exchange(port: int, request: RawRequest) -> Answer:
    """One request on a fresh connection; the first answer on it."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1."), f"no HTTP answer: {data[:200]!r}"
    status = int(lines[0].split(b" ", 2)[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in lines[1:])
    }
    length = headers.get(b"content-length")
    if length is not None:
        body = body[: int(length)]
    return Answer(status, headers.get(b"content-type", b"").decode(), body)


# -- strategies -------------------------------------------------------------------------------

HOSTILE_TEXT = st.text(
    alphabet=st.characters(codec=None, categories=None),  # surrogates and controls included
    max_size=40,
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | HOSTILE_TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE_TEXT, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    """Shapes the readers look for, with hostile values in the fields they read."""
    identifier = HOSTILE_TEXT | st.integers() | st.none() | JSON_VALUES
    return draw(
        st.fixed_dictionaries(
            {},
            optional={
                "id": identifier,
                "type": identifier,
                "action": identifier,
                "event_type": identifier,
                "data": JSON_VALUES,
                "payload": JSON_VALUES,
                "identity": JSON_VALUES,
                "traits": JSON_VALUES,
                "flags": JSON_VALUES,
                "createdTimestamp": JSON_SCALARS,
                "timestamp": JSON_SCALARS,
            },
        )
    )


def _sample_bodies() -> list[bytes]:
    return [
        json.dumps(sample.payload).encode()
        for sender in samples.SENDERS
        for sample in samples.samples(sender)[:4]
    ]


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(
                st.sampled_from([b"\\ud800", b"\x00", b"\xff", b"[" * 2000, b"1" * 30, b"NaN"])
            )
        else:
            del data[at]
    return bytes(data)


def bodies() -> st.SearchStrategy[bytes]:
    as_json = st.builds(lambda value: json.dumps(value).encode(), envelopes() | JSON_VALUES)
    valid = st.sampled_from(_sample_bodies())
    return st.one_of(
        as_json,
        valid,
        valid.flatmap(mutated),
        as_json.flatmap(mutated),
        st.binary(max_size=300),
        st.just(b"[" * 3000 + b"]" * 3000),
        st.just(b'{"id": "x", "pad": "' + b"y" * 5000 + b'"}'),  # over max_body_bytes
    )


HEADER_NAMES = st.sampled_from([b"X-Extra", b"X-Forwarded-For", b"Accept", b"webhook-id"])
HEADER_VALUES = st.binary(max_size=60).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))


def _hex_signature(body: bytes) -> bytes:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest().encode()


def _sw_signature(msg_id: bytes, timestamp: bytes, body: bytes) -> bytes:
    signed = msg_id.decode("latin-1").encode() + b"." + timestamp + b"." + body
    return b"v1," + base64.b64encode(hmac.new(WHSEC_KEY, signed, hashlib.sha256).digest())


def _signature_headers(draw: st.DrawFn, path: str, signed_body: bytes) -> list[tuple[bytes, bytes]]:
    mode = draw(st.sampled_from(["valid", "valid", "mutated", "garbage", "missing"]))
    if path == "/sw" or path == "/open-sw":
        return _sw_headers(draw, mode, signed_body)
    header = {
        "/flagright": b"x-flagright-signature",
        "/flagsmith": b"X-Flagsmith-Signature",
        "/flipt": b"X-Flipt-Webhook-Signature",
        "/hex": b"X-Sig",
        "/b64": b"X-Sig",
    }.get(path)
    if header is None or mode == "missing":
        return []
    digest = hmac.new(SECRET.encode(), signed_body, hashlib.sha256).digest()
    value = b"sha256=" + base64.b64encode(digest) if path == "/b64" else digest.hex().encode()
    if mode == "mutated":
        value = draw(mutated(value))
    elif mode == "garbage":
        value = draw(HEADER_VALUES)
    if path == "/flagright" and draw(st.booleans()):
        value = _hex_signature(b"other") + b", " + value  # Flagright rolling its secret
    return [(header, value)]


def _sw_headers(draw: st.DrawFn, mode: str, body: bytes) -> list[tuple[bytes, bytes]]:
    msg_id = draw(st.sampled_from([b"msg_1", b"msg_\x85", b"", b"m" * 300]) | HEADER_VALUES)
    now = int(time.time())
    timestamp = draw(
        st.sampled_from([str(now), str(now - 3600), str(now + 3600), "abc", "9" * 40, "-5"])
    ).encode()
    signature = _sw_signature(msg_id, timestamp, body)
    if mode == "mutated":
        signature = draw(mutated(signature))
    elif mode == "garbage":
        signature = draw(HEADER_VALUES)
    headers = [(b"webhook-id", msg_id), (b"webhook-timestamp", timestamp)]
    return headers if mode == "missing" else [*headers, (b"webhook-signature", signature)]


PATHS = [
    "/flagright",
    "/flagsmith",
    "/flipt",
    "/sw",
    "/hex",
    "/b64",
    "/open",
    "/open-flagright",
    "/open-sw",
    "/allow",
]


@st.composite
def requests(draw: st.DrawFn, path: str) -> RawRequest:
    body = draw(bodies())
    encoding = draw(st.sampled_from([None, None, None, "gzip", "deflate", "bad-gzip", "unknown"]))
    sent, headers = body, []
    if encoding == "gzip":
        sent, headers = gzip.compress(body), [(b"Content-Encoding", b"gzip")]
    elif encoding == "deflate":
        sent, headers = zlib.compress(body), [(b"Content-Encoding", b"deflate")]
    elif encoding == "bad-gzip":
        headers = [(b"Content-Encoding", b"gzip")]
    elif encoding == "unknown":
        headers = [(b"Content-Encoding", draw(st.sampled_from([b"zstd", b"x-made-up", b"br"])))]
    headers += _signature_headers(draw, path, body)
    headers += draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=3))
    headers.append((b"Content-Type", draw(st.sampled_from([b"application/json", b"text/plain"]))))
    framing = draw(st.sampled_from(["length", "length", "length", "chunked", "short", "long"]))
    return RawRequest(path, sent, headers, framing)


# -- the properties ---------------------------------------------------------------------------


def check_answer(relay: RelayThread, request: RawRequest) -> Answer:
    before = relay.counts()
    answer = exchange(relay.port, request)
    assert answer.status in ALLOWED_STATUSES, answer
    if answer.status >= 400:
        assert answer.content_type.startswith("application/json"), answer
        error = json.loads(answer.body)
        assert isinstance(error, dict), answer
        assert isinstance(error["error"], str), answer
        assert error["error"], answer
    after = relay.counts()
    if answer.status == 202:
        assert after["events"] == before["events"] + 1
    else:
        assert after["events"] == before["events"], (answer, before, after)
    health = exchange(relay.port, RawRequest("/healthz", b"", method=b"GET"))
    assert health.status == 200
    return answer


# The suite's profile (tests/conftest.py) makes the examples the same on every run.
PROPERTY_SETTINGS = settings(
    max_examples=120,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.slow  # a few seconds each: a body one byte short waits for the read timeout
@pytest.mark.parametrize("path", PATHS)
def test_any_request_to_a_source_gets_a_documented_answer_and_stores_only_on_202(
    relay: RelayThread, path: str
) -> None:
    @PROPERTY_SETTINGS
    @given(request=requests(path))
    def check(request: RawRequest) -> None:
        check_answer(relay, request)

    check()


def test_any_path_and_method_gets_a_json_answer(relay: RelayThread) -> None:
    @PROPERTY_SETTINGS
    @given(
        path=st.text(
            alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30
        ).map(lambda tail: "/" + tail),
        method=st.sampled_from([b"GET", b"PUT", b"DELETE", b"PATCH", b"POST", b"OPTIONS"]),
    )
    def check(path: str, method: bytes) -> None:
        request = RawRequest(path, b"{}", [(b"Content-Type", b"application/json")], method=method)
        check_answer(relay, request)

    check()


def test_a_valid_signed_event_is_accepted_then_a_duplicate(relay: RelayThread) -> None:
    """The control: the generator's valid requests really are valid."""
    body = json.dumps({"id": "prop-control", "type": "CASE_OPENED", "data": {}}).encode()
    request = RawRequest("/flagright", body, [(b"x-flagright-signature", _hex_signature(body))])
    assert check_answer(relay, request).status == 202
    assert check_answer(relay, request).status == 200
