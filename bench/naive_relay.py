"""The naive relay a user would write from the senders' sample code, as the alternative relay
has to beat: a Flask handler that checks the HMAC, parses the JSON, forwards the body with
`requests.post` (synchronously, a new connection each time, as the samples do) and answers 202
once the target has answered. Served by gunicorn, 2 workers x 8 threads:

    NAIVE_SECRET=... NAIVE_TARGET=http://127.0.0.1:PORT/sink \\
        gunicorn -w 2 --threads 8 -b 127.0.0.1:PORT --chdir bench naive_relay:app

It stores nothing: an event the target does not take is lost, and a slow target holds a
thread per event. Only for `make bench`; its packages are the `bench` extra.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import requests
from flask import Flask, abort, request

app = Flask(__name__)
SECRET = os.environ.get("NAIVE_SECRET", "").encode()
TARGET = os.environ.get("NAIVE_TARGET", "")


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@app.post("/hooks/flagright")
def hook() -> tuple[dict[str, str], int]:
    body = request.get_data()
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Signature", "")):
        abort(401)
    event = json.loads(body)
    forwarded = requests.post(
        TARGET,
        data=body,
        headers={"Content-Type": "application/json", "Relay-Event-Id": event["id"]},
        timeout=10,
    )
    forwarded.raise_for_status()
    return {"id": event["id"]}, 202
