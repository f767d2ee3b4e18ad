"""Config models that several kinds share: the target base, retry, outbound signing, a body.

Each kind's own model lives in its module (`relay/targets/http.py`, `relay/sources/flipt.py`,
...) and is listed in its registry; `relay/config.py` builds the tagged unions from those.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Self

from pydantic import Field, ValidationInfo, field_validator

from relay.fields import Duration, HeaderName, Model, Secret, WhsecSecret, error
from relay.templatefields import InlineTemplate, JinjaExpression, TemplateFile

SIGN_SCHEMES = ("hmac-sha256", "standard-webhooks")
OnGone = Literal["pause", "dead"]  # what a 410 Gone answer does to a target


class RetryConfig(Model):
    initial: Duration = timedelta(milliseconds=500)
    """Backoff before the second attempt (full jitter up to it)."""
    multiplier: float = Field(default=2.0, ge=1.0)
    """Backoff growth per attempt."""
    max_interval: Duration = timedelta(minutes=10)
    """Longest backoff between two attempts."""
    max_elapsed: Duration = timedelta(hours=24)
    """No attempt is scheduled later than this after the first: the delivery is dead then."""
    max_attempts: int | None = Field(default=None, ge=1)
    """Give up after this many attempts (default: no limit but max_elapsed)."""


class HmacSignConfig(Model):
    scheme: Literal["hmac-sha256"]
    """Hex HMAC-SHA256 of the body in one header."""
    secret: Secret
    """The HMAC key."""
    header: HeaderName = "Relay-Signature"
    """The header that carries the signature."""


class StandardWebhooksSignConfig(Model):
    scheme: Literal["standard-webhooks"]
    """webhook-id, webhook-timestamp and webhook-signature, per the Standard Webhooks spec."""
    secret: WhsecSecret
    """A whsec_<base64> secret."""


SignConfig = Annotated[HmacSignConfig | StandardWebhooksSignConfig, Field(discriminator="scheme")]


class OrderingConfig(Model):
    key: JinjaExpression
    """Deliveries with the same key go out one at a time, in the order relay received their
    events, e.g. event.data.userId; an event whose key fails to evaluate goes out unordered."""


class TargetModel(Model):
    """What every target's config model is: each kind narrows `kind` to its own name."""

    if TYPE_CHECKING:  # declared by each kind, where its fields are in the order they read
        kind: str
        retry: RetryConfig

    ordering: OrderingConfig | None = None
    """Deliver events with the same key one at a time, in order (a failing one holds back
    the later ones of its key, never other keys)."""

    def credentials(self) -> Iterator[str]:
        """The credentials this target's config holds (redacted wherever relay writes)."""
        return iter(())

    def resolved(self, base_dir: Path) -> Self:
        """The same config with relative file paths made relative to `base_dir`."""
        return self


class BodyTargetModel(TargetModel):
    """A target whose request body is a template (`body` inline, or a `template` file)."""

    body: InlineTemplate | None = None
    """The request body as an inline template (default: the bytes the sender sent)."""
    template: TemplateFile | None = None
    """The request body as a template file in templates_dir."""

    @field_validator("template", mode="before")
    @classmethod
    def _one_body_source(cls, template: object, info: ValidationInfo) -> object:
        if template is not None and info.data.get("body") is not None:
            raise error("body", "set body or template, not both")
        return template
