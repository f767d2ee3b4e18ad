"""`${VAR}` and `${VAR:-default}` in config values, expanded from an environment mapping."""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class MissingVariable(ValueError):
    """An environment variable the config needs is not set and has no default."""


def expand(text: str, environ: Mapping[str, str]) -> str:
    """Expand references in `text`; `$$` stands for a literal `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise MissingVariable(f"environment variable {name} is not set (and has no :-default)")

    return _REFERENCE.sub(replace, text)
