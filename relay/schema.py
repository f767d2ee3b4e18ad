"""The config file's JSON Schema, from the models: what `relay schema` prints and what
`relay.schema.json` holds, so that editors complete and check the file as relay will."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from relay.config import Config
from relay.durations import format_duration


class _RelaySchema(GenerateJsonSchema):
    def encode_default(self, dft: Any) -> Any:
        """Durations as the config writes them (`500ms`), not as ISO 8601 (`PT0.5S`)."""
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema(schema_generator=_RelaySchema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "relay config",
        **schema,
    }


def config_schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
