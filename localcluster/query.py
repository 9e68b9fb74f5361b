"""Query-string parsing shared by the HTTP handlers."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import BadRequest


def as_bool(value: str | None) -> bool:
    """A boolean query parameter ("true"/"1"); anything else is false."""
    return (value or "").lower() in ("true", "1")


def as_int(q: Mapping[str, str], key: str) -> int | None:
    """An integer query parameter or None; BadRequest when it is not a number."""
    raw = q.get(key)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f'invalid value for {key}: "{raw}"') from None
