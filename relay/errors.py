"""The error tree. Every message tells the operator what to fix.

RelayError
├── ConfigError          the config cannot be used; carries every problem found
├── InboundError         a request is refused; carries the HTTP status to answer
│   └── VerificationError    401: the signature (or its headers) does not check out
├── RenderError          a template failed for one event: the delivery fails at once
└── StoreError           the store cannot read or commit: ingest answers 503
"""

from __future__ import annotations

from typing import Literal

# Refusals that their status alone does not name (relay.inbound names the others by status).
RefusalKind = Literal["malformed_body", "invalid_json", "store_unavailable"]


class RelayError(Exception):
    """Base of all errors relay raises on purpose."""


class ConfigError(RelayError):
    """The configuration is unusable; `problems` lists each one as `yaml.path: message`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class InboundError(RelayError):
    """A request is refused with `status`; the message is sent back to the sender.

    `kind` names the refusal in metrics where its status alone does not (400 and 503 each
    stand for more than one).
    """

    status = 400

    def __init__(
        self, reason: str, status: int | None = None, kind: RefusalKind | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        if status is not None:
            self.status = status


class VerificationError(InboundError):
    """The request's signature does not prove it came from the configured sender."""

    status = 401


class RenderError(RelayError):
    """A template could not render one event; retrying would fail the same way."""


class StoreError(RelayError):
    """The store could not read or commit."""
