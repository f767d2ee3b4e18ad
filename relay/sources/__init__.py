"""Inbound senders: how each one's requests are verified and read into relay's event.

A sender family is one module with `build_verifier` and `read`, plus one entry here.
"""

from __future__ import annotations

from collections.abc import Callable

from relay import config
from relay.fields import secret_values
from relay.signing import standard_webhooks_key
from relay.sources import flagright, flagsmith, flipt, standard_webhooks
from relay.sources.base import Reader, Verifier, read_generic
from relay.sources.hmac import build_hmac_verifier

READERS: dict[str, Reader] = {
    "generic": read_generic,
    "flagright": flagright.read,
    "flagsmith": flagsmith.read,
    "flipt": flipt.read,
    "standard-webhooks": standard_webhooks.read,
}


def build_verifier(verify: config.VerifyConfig, clock: Callable[[], float]) -> Verifier:
    secrets = secret_values(verify.secret)
    keys = [secret.encode() for secret in secrets]
    if isinstance(verify, config.HmacVerifyConfig):
        return build_hmac_verifier(keys, verify.header, verify.encoding, verify.prefix)
    if isinstance(verify, config.FlagrightVerifyConfig):
        return flagright.build_verifier(keys)
    if isinstance(verify, config.FlagsmithVerifyConfig):
        return flagsmith.build_verifier(keys)
    if isinstance(verify, config.FliptVerifyConfig):
        return flipt.build_verifier(keys)
    sw_keys = [standard_webhooks_key(secret) for secret in secrets]
    return standard_webhooks.build_verifier(sw_keys, verify.tolerance.total_seconds(), clock)
