"""The Authorization header that both clouds' signatures use: ``ALGORITHM name=value,name=value,...``."""

from __future__ import annotations

from typing import Dict


def authorization_fields(value: str) -> Dict[str, str]:
    """The algorithm (under ``algorithm``) and the name=value fields of an Authorization header."""
    algorithm, _sep, rest = value.strip().partition(" ")
    fields = {"algorithm": algorithm}
    for part in rest.split(","):
        name, sep, field = part.strip().partition("=")
        if sep:
            fields[name] = field
    return fields
