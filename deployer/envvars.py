"""An app's environment variables: plain values, or a key of a Kubernetes Secret.

``App.env`` maps each name to a string, or to ``{"secretKeyRef": {"name": <Secret>,
"key": <key>}}``. A reference is rendered as ``valueFrom.secretKeyRef`` in the pod
spec, so the value itself never passes through Greenlight.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

SECRET_KEY_REF = "secretKeyRef"
# What users who may not change an app see instead of a value.
MASK = "••••"
MAX_VALUE_LENGTH = 32 * 1024

# A DNS-1123 subdomain: the rule for a Secret's name.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A key of a Secret or ConfigMap's data.
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class SecretRef(TypedDict):
    """Which key of which Secret (in the app's namespace) holds the value."""

    name: str
    key: str


def secret_ref(value: Any) -> SecretRef | None:
    """The Secret reference an env value holds, or None for a plain value."""
    if isinstance(value, dict) and isinstance(value.get(SECRET_KEY_REF), dict):
        ref = value[SECRET_KEY_REF]
        return SecretRef(name=str(ref.get("name", "")), key=str(ref.get("key", "")))
    return None


def secret_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a Secret, or None."""
    if not isinstance(name, str) or not name:
        return "Give the Secret's name."
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        return (
            f"'{name}' is not a Secret name: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters."
        )
    return None


def secret_key_problem(key: Any) -> str | None:
    """Why ``key`` cannot be a key of a Secret, or None."""
    if not isinstance(key, str) or not key:
        return "Give the key within the Secret."
    if len(key) > 253 or not _CONFIG_KEY.match(key) or key in {".", ".."}:
        return (
            f"'{key}' is not a Secret key: letters, digits, '-', '_' and '.', "
            "at most 253 characters."
        )
    return None


def value_problem(name: str, value: Any) -> str | None:
    """What is wrong with the value of variable ``name``, or None when it is valid."""
    if isinstance(value, str):
        if len(value) > MAX_VALUE_LENGTH:
            return f"The value of '{name}' is longer than {MAX_VALUE_LENGTH} characters."
        if "\0" in value:
            # A process environment is NUL-terminated strings; no program could read it.
            return f"The value of '{name}' contains a NUL character; remove it."
        return None
    if not isinstance(value, dict) or set(value) != {SECRET_KEY_REF}:
        return (
            f"The value of '{name}' must be text, or a Secret's key as "
            '{"secretKeyRef": {"name": "<secret>", "key": "<key>"}}.'
        )
    ref = value[SECRET_KEY_REF]
    if not isinstance(ref, dict) or set(ref) != {"name", "key"}:
        return f"'{name}': a secretKeyRef has exactly a name and a key."
    problem = secret_name_problem(ref["name"]) or secret_key_problem(ref["key"])
    return f"'{name}': {problem}" if problem else None


def container_env(env: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``env`` entries of a container spec for ``env``, sorted by name."""
    entries: list[dict[str, Any]] = []
    for name, value in sorted(env.items()):
        ref = secret_ref(value)
        if ref is None:
            entries.append({"name": name, "value": value})
        else:
            selector = {"name": ref["name"], "key": ref["key"]}
            entries.append({"name": name, "valueFrom": {SECRET_KEY_REF: selector}})
    return entries


def masked(env: dict[str, Any]) -> dict[str, str]:
    """``env`` as users who may not change the app see it: the names, every value hidden."""
    return dict.fromkeys(env, MASK)


def describe(value: Any) -> str:
    """A value as the app page shows it: the text, or which Secret key it comes from."""
    ref = secret_ref(value)
    if ref is None:
        return str(value)
    return f"from Secret {ref['name']}, key {ref['key']}"
