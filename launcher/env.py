"""Typed readers for Greenlight's environment; the only module that reads ``os.environ``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    """Return the variable ``name`` or ``default`` when it is unset."""
    return os.environ.get(name, default)


def env_optional(name: str) -> str | None:
    """Return the variable ``name``, or None when it is unset or empty."""
    value = os.environ.get(name, "")
    return value or None


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return ``name`` as an int within bounds; raise ImproperlyConfigured otherwise."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value}")
    return value


def env_bool(name: str, default: bool) -> bool:
    """Return ``name`` as a boolean (1/0, true/false, yes/no, on/off)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    """Return ``name`` split on commas, blanks dropped."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def proxy_ssl_header(name: str, raw: str | None) -> tuple[str, str] | None:
    """Django's SECURE_PROXY_SSL_HEADER from ``Header-Name`` or ``Header-Name=value``.

    The value defaults to ``https``; None when ``raw`` is None. A malformed header name
    raises ImproperlyConfigured naming the variable ``name``.
    """
    if raw is None:
        return None
    header, _, value = raw.partition("=")
    header, value = header.strip(), value.strip() or "https"
    if not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise ImproperlyConfigured(
            f"{name} must be a header name such as X-Forwarded-Proto (optionally =https), "
            f"got {raw!r}"
        )
    return "HTTP_" + header.upper().replace("-", "_"), value


def env_path(name: str, default: Path) -> Path:
    """Return ``name`` as an absolute path (relative paths are taken from the project root)."""
    raw = os.environ.get(name)
    path = Path(raw) if raw else default
    return path if path.is_absolute() else (BASE_DIR / path).resolve()
