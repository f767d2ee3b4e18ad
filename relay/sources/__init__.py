"""Inbound senders: how each one's requests are verified and read into relay's event.

A sender family is one module (see `relay.sources.base.Sender`) plus one entry in `SENDERS`;
`relay/config.py` builds the `verify` union and the `sender` choices from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from relay.sources import flagright, flagsmith, flipt, hmac, standard_webhooks
from relay.sources.base import Sender, Verifier, VerifyModel, VerifyScheme

SENDERS: dict[str, Sender] = {
    sender.name: sender
    for sender in (
        hmac.SENDER,
        flagright.SENDER,
        flagsmith.SENDER,
        flipt.SENDER,
        standard_webhooks.SENDER,
    )
}
GENERIC = hmac.SENDER.name
# Each `verify.scheme`, and the sender whose requests it verifies by default.
SCHEMES: dict[str, VerifyScheme] = {
    sender.verify.name: sender.verify for sender in SENDERS.values() if sender.verify is not None
}
SENDER_OF_SCHEME: dict[str, str] = {
    sender.verify.name: sender.name for sender in SENDERS.values() if sender.verify is not None
}

if TYPE_CHECKING:
    VerifyConfig = VerifyModel
else:  # what `sources.NAME.verify` validates as: one of the schemes' models, by `scheme`
    VerifyConfig = Annotated[
        Union[tuple(scheme.model for scheme in SCHEMES.values())],  # noqa: UP007
        Field(discriminator="scheme"),
    ]


def build_verifier(verify: VerifyModel, clock: Callable[[], float]) -> Verifier:
    return SCHEMES[verify.scheme].build_verifier(verify, clock)
