"""Flagright-shaped webhook requests, each with a unique id and a valid HMAC-SHA256 signature.

Every request is built before a measurement starts, as the exact bytes of an HTTP/1.1 request,
so the load generator spends its time sending, not building JSON or computing HMACs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

BODY_BYTES = 784  # the size the performance notes measured with
EVENT_TYPE = "CASE_OPENED"


def _body_template() -> bytes:
    """A compact `CASE_OPENED` body whose id (36 chars) and timestamp (13 digits) vary."""
    zero_id = "0" * 36
    transactions = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"txn-{i}")) for i in range(12)]
    envelope = {
        "id": zero_id,
        "type": EVENT_TYPE,
        "data": {
            "caseId": "C-0000000000",
            "status": "OPEN",
            "userId": "U-7d3c0a8e-5b2f-4c61-9f0e-2a4b6c8d1e3f",
            "transactionIds": transactions,
            "comment": "",
        },
        "createdTimestamp": 1_700_000_000_000,
        "triggeredBy": "SYSTEM",
    }
    size = len(json.dumps(envelope, separators=(",", ":")).encode())
    envelope["data"]["comment"] = "x" * (BODY_BYTES - size)  # type: ignore[index]
    text = json.dumps(envelope, separators=(",", ":"))
    text = text.replace(zero_id, "%(id)s").replace("C-0000000000", "C-%(case)010d")
    return text.replace("1700000000000", "%(ts)013d").encode()


class RequestFactory:
    """Builds signed POST requests for one source path; ids are unique across runs."""

    def __init__(self, host: str, port: int, path: str, secret: str, header: str) -> None:
        self._template = _body_template().decode()
        self._key = secret.encode()
        self._head = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"{header}: %(sig)s\r\n"
            "Content-Length: %(length)d\r\n"
            "\r\n"
        )
        self._run = uuid.uuid4().hex  # ids of one run share a random prefix, then count up

    @property
    def id_prefix(self) -> str:
        """What every id of this run starts with; the rest is the request's index, in hex."""
        run = self._run
        return f"{run[:8]}-{run[8:12]}-4{run[13:16]}-a{run[17:20]}-"

    def body(self, index: int) -> bytes:
        event_id = f"{self.id_prefix}{index:012x}"
        fields = {"id": event_id, "case": index, "ts": 1_700_000_000_000 + index}
        return (self._template % fields).encode()

    def request(self, index: int) -> bytes:
        body = self.body(index)
        signature = hmac.digest(self._key, body, hashlib.sha256).hex()
        head = self._head % {"sig": signature, "length": len(body)}
        return head.encode() + body

    def build(self, count: int) -> list[bytes]:
        return [self.request(i) for i in range(count)]
