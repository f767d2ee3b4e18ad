"""`${VAR}` and `${VAR:-default}` in config values, expanded from an environment mapping.

`$$` stands for a literal `$`. As in the shell, `${VAR:-default}` uses the default when VAR is
unset or empty. Any other `${` is an error rather than text passed on silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(
    r"\$\$"
    r"|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}"
    r"|(\$\{[A-Za-z0-9_]{0,40})"
)
_SYNTAX = "write ${NAME} or ${NAME:-default}, and $$ for a literal $"


class EnvError(ValueError):
    """A config value's `${...}` cannot be expanded."""


class MissingVariable(EnvError):
    """Environment variables the config needs are not set and have no default."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        if len(names) == 1:
            text = f"environment variable {names[0]} is not set (and has no :-default)"
        else:
            listed = ", ".join(names[:-1]) + f" and {names[-1]}"
            text = f"environment variables {listed} are not set (and have no :-default)"
        super().__init__(text)


class BadReference(EnvError):
    """A `${` that does not start a well-formed reference."""


def expand(text: str, environ: Mapping[str, str], substituted: list[str] | None = None) -> str:
    """Expand references in `text`; raise MissingVariable naming every unset variable.

    Each value put in place of a reference is appended to `substituted`, when given: the
    loader keeps those of credential-bearing fields to redact them wherever they may appear.
    """
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, default, bad = match.group(1), match.group(2), match.group(3)
        if bad is not None:
            raise BadReference(f'invalid reference "{bad}": {_SYNTAX}')
        if name is None:
            return "$"
        if default is not None and "${" in default:
            raise BadReference(f'invalid reference "${{{name}": a default cannot contain ${{...}}')
        value = environ.get(name)
        if not (value is not None and (value or default is None)):
            value = default
        if value is not None:
            if substituted is not None:
                substituted.append(value)
            return value
        if name not in missing:
            missing.append(name)
        return match.group(0)

    result = _REFERENCE.sub(replace, text)
    if missing:
        raise MissingVariable(missing)
    return result
