"""aiohttp's refusals in relay's words: a status and an `{"error": ...}` text that never quotes
the client's bytes, for the server's own answers and for the inbound handler's body errors."""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    ContentEncodingError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)

CLIENT_CLOSED_REQUEST = 499  # nginx's status for it: never sent, but logged and counted
CLIENT_LEFT = "the client closed the connection before the body was complete"


class BodyAbandoned(TimeoutError):
    """relay stopped waiting for a request body; the handler reading it answers `status`.

    Set on the body stream. A TimeoutError, so that aiohttp, draining a body nobody read,
    takes it as the end of that body rather than as a fault.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def refusal(status: int, phrase: str, reason: str) -> bytes:
    """A whole answer for a connection no request was read from."""
    body = json.dumps({"error": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# aiohttp's parse errors whose own text quotes the client's bytes, in words of relay's.
PARSE_ERRORS: list[tuple[type[HttpProcessingError], str]] = [
    (LineTooLong, "request line or a header is too long"),
    (InvalidHeader, "invalid header"),
    (BadHttpMethod, "invalid method in the request line"),
    (BadStatusLine, "malformed request line"),
    (InvalidURLError, "invalid URL in the request line"),
]


def describe_error(status: int, exc: BaseException | None) -> tuple[int, str]:
    """The status and text for an error aiohttp found, without echoing the client's bytes."""
    if isinstance(exc, ConnectionResetError):  # the body's end, when the client leaves
        return CLIENT_CLOSED_REQUEST, CLIENT_LEFT
    if isinstance(exc, web.RequestPayloadError):
        return 400, _body_error(exc)
    if isinstance(exc, ContentEncodingError):  # found in the head: an encoding aiohttp lacks
        return 415, "Content-Encoding is not supported: send the body as is, gzip or deflate"
    if isinstance(exc, BadHttpMethod) and "HTTPS" in exc.message:
        return 400, "HTTPS sent to a plain HTTP port"
    if isinstance(exc, HttpProcessingError):
        known = (text for kind, text in PARSE_ERRORS if isinstance(exc, kind))
        return 400, next(known, None) or f"malformed request: {_reason(exc.message)}"
    if status == 504:
        return 504, "relay timed out handling the request"
    return 500, "relay failed to handle the request; its log says why"


def _body_error(exc: web.RequestPayloadError) -> str:
    cause = exc.__cause__
    if isinstance(cause, ContentEncodingError):
        return "body does not decode as its Content-Encoding says"
    if isinstance(cause, HttpProcessingError):
        return f"malformed body: {_reason(cause.message)}"
    return "malformed body"


def _reason(message: str) -> str:
    """llhttp's reason: the text before it quotes the offending bytes, printable ASCII only."""
    lines = message.split(":\n", 1)[0].strip().splitlines()
    text = "".join(c if " " <= c <= "~" else "?" for c in (lines[0] if lines else ""))
    return text[:120] or "bad request"
