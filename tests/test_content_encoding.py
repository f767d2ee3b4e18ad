"""Content-Encoding: gzip and deflate bodies are decoded, then checked like any other; the
signature covers the decoded bytes; a body that is not what its header says is 400, an
encoding relay does not decode is 415, and a bomb stops at limits.max_body_bytes."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable

import pytest

from tests.conftest import SECRET, ConfigWriter, Relay, StartRelay, hmac_hex
from tests.rawhttp import RawConnection
from tests.receiver import Receiver

CONFIG = """\
store: "sqlite:///relay.db"
limits: {{max_body_bytes: 16384}}
sources:
  shop:
    path: /hooks/shop
    verify: {{scheme: hmac-sha256, secret: {secret}, header: X-Signature}}
targets:
  out:
    kind: http
    url: "{url}/in"
routes:
  - targets: [out]
"""

NOTHING_STORED = {"events": 0, "pending": 0, "delivered": 0, "dead": 0}
EVENT = json.dumps({"id": "z1", "type": "order.paid", "data": {"amount": 5}}).encode()


@pytest.fixture
async def relay(write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver) -> Relay:
    return await start_relay(write_config(CONFIG.format(secret=SECRET, url=receiver.url)))


def raw_deflate(data: bytes) -> bytes:
    """Deflate without the zlib wrapper, as some clients send `deflate`."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


async def post_encoded(relay: Relay, encoding: str, body: bytes, signed: bytes) -> tuple[int, str]:
    headers = {"Content-Encoding": encoding, "X-Signature": hmac_hex(SECRET, signed)}
    response = await relay.client.post(
        "/hooks/shop", data=body, headers=headers, compress=False, auto_decompress=False
    )
    return response.status, await response.text()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", raw_deflate),
        ("GZip", gzip.compress),
        ("identity", bytes),
    ],
    ids=["gzip", "deflate", "raw deflate", "any case", "identity"],
)
async def test_a_compressed_body_signed_before_compression_is_accepted_as_decoded(
    relay: Relay, receiver: Receiver, encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    status, text = await post_encoded(relay, encoding, encode(EVENT), signed=EVENT)
    assert (status, json.loads(text)) == (202, {"id": "z1", "deliveries": 1})
    (delivered,) = await receiver.wait_for(1)
    assert delivered.body == EVENT  # stored and forwarded as the sender serialised it


async def test_a_signature_over_the_compressed_bytes_does_not_verify(relay: Relay) -> None:
    compressed = gzip.compress(EVENT)
    status, text = await post_encoded(relay, "gzip", compressed, signed=compressed)
    assert status == 401
    assert json.loads(text) == {"error": "signature in X-Signature does not match the body"}
    assert await relay.counts() == NOTHING_STORED


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_is_not_its_content_encoding_is_400(relay: Relay, encoding: str) -> None:
    status, text = await post_encoded(relay, encoding, EVENT, signed=EVENT)
    assert status == 400
    assert json.loads(text) == {
        "error": f"body is not valid {encoding} (Content-Encoding: {encoding})"
    }
    assert await relay.counts() == NOTHING_STORED


async def test_a_truncated_gzip_body_fails_its_signature(relay: Relay) -> None:
    """aiohttp decodes a gzip stream cut short without an error; the signature catches it."""
    status, text = await post_encoded(relay, "gzip", gzip.compress(EVENT)[:-12], signed=EVENT)
    assert status == 401
    assert json.loads(text) == {"error": "signature in X-Signature does not match the body"}
    assert await relay.counts() == NOTHING_STORED


@pytest.mark.parametrize("encoding", ["compress", "x-gzip", "gzip, gzip", "br", "zstd", "\u00e9"])
async def test_an_encoding_relay_does_not_decode_is_415(relay: Relay, encoding: str) -> None:
    connection = await RawConnection.open(relay.client.port)
    await connection.send(
        b"POST /hooks/shop HTTP/1.1\r\nHost: relay\r\nContent-Encoding: %s\r\n"
        b"X-Signature: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (encoding.encode("latin-1"), hmac_hex(SECRET, EVENT).encode(), len(EVENT), EVENT)
    )
    response = await connection.response()
    connection.close()
    assert response.status == 415
    error = response.json()["error"]
    assert error.startswith("Content-Encoding ")
    assert error.endswith(" is not supported: send the body as is, gzip or deflate")
    assert await relay.counts() == NOTHING_STORED


async def test_a_gzip_bomb_is_413_naming_the_limit(relay: Relay) -> None:
    inflated = bytes(15 * 1024 * 1024)  # 15 MiB of zeros: about 15 KiB compressed
    bomb = gzip.compress(inflated, compresslevel=9)
    assert len(bomb) < 16384  # only decoding shows how large it is
    status, text = await post_encoded(relay, "gzip", bomb, signed=inflated)
    assert status == 413
    assert json.loads(text) == {"error": "body is larger than 16384 bytes (limits.max_body_bytes)"}
    assert await relay.counts() == NOTHING_STORED
