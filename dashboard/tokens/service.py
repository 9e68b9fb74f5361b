"""Creating and checking tokens: one set of rules for the Tokens page, the API and the command."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone

from dashboard.tokens.models import SCOPES, ApiToken
from deployer import roles

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def split_list(value: str | Iterable[str] | None) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` as a list of non-empty, stripped names."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def parse_duration(value: str) -> timedelta:
    """``90m``, ``12h``, ``30d`` or ``2w`` as a timedelta; ValueError with what to write otherwise."""
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"{value!r} is not a duration; write a positive number and a unit: 90m, 12h, 30d or 2w."
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def check(
    owner: Any,
    name: str,
    scopes: list[str],
    namespaces: list[str],
    expires_at: datetime | None,
    *,
    within: ApiToken | None = None,
) -> dict[str, list[str]]:
    """Each field's problems, empty when a token of these settings may be created for ``owner``.

    ``within`` is the token the request came with, if any: a token never makes a broader one.
    """
    errors: dict[str, list[str]] = {}
    name = name.strip()
    if not name:
        errors["name"] = ["Give the token a name, for example the CI job that uses it."]
    elif len(name) > 100:
        errors["name"] = ["A token's name is at most 100 characters."]
    elif ApiToken.objects.filter(user=owner, name=name, revoked_at__isnull=True).exists():
        errors["name"] = [f"{owner} already has a token named {name!r}; choose another name."]
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        errors["scopes"] = [
            f"Unknown scope {', '.join(map(repr, unknown))}; choose from {', '.join(SCOPES)}."
        ]
    elif not scopes:
        errors["scopes"] = [f"Choose at least one scope: {', '.join(SCOPES)}."]
    elif within is not None and not set(scopes) <= set(within.scopes):
        errors["scopes"] = [
            f"This request's token has only the scopes {', '.join(within.scopes)}; a token "
            "cannot make a token with more."
        ]
    bad = [ns for ns in namespaces if len(ns) > 63 or not _DNS_LABEL.match(ns)]
    if bad:
        errors["namespaces"] = [
            f"{', '.join(map(repr, bad))}: a namespace is a DNS label (lowercase letters, "
            "digits and '-', starting and ending with a letter or digit, at most 63 characters)."
        ]
    elif within is not None and within.namespaces:
        outside = sorted(set(namespaces or ["*"]) - set(within.namespaces))
        if outside:
            errors["namespaces"] = [
                f"This request's token is limited to {', '.join(within.namespaces)}; list only "
                "those namespaces."
            ]
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = [
            f"The expiry {expires_at:%Y-%m-%d %H:%M} UTC is in the past; choose a later time or "
            "none."
        ]
    elif (
        within is not None
        and within.expires_at is not None
        and (expires_at is None or expires_at > within.expires_at)
    ):
        errors["expires_at"] = [
            f"This request's token expires at {within.expires_at:%Y-%m-%d %H:%M} UTC; a "
            "token it makes cannot outlive it."
        ]
    return errors


def create(
    owner: Any,
    name: str,
    scopes: list[str],
    namespaces: list[str] | None = None,
    expires_at: datetime | None = None,
    *,
    within: ApiToken | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its full text (shown once); ValidationError by field, nothing stored, if bad."""
    namespaces = namespaces or []
    errors = check(owner, name, scopes, namespaces, expires_at, within=within)
    if errors:
        raise ValidationError(errors)
    try:
        return ApiToken.issue(owner, name.strip(), scopes, namespaces, expires_at)
    except IntegrityError:
        # Another request created a live token of this name since the check above.
        raise ValidationError(
            {"name": [f"{owner} already has a token named {name.strip()!r}; choose another name."]}
        ) from None


def may_manage(user: Any, token: ApiToken) -> bool:
    """True when ``user`` may see and revoke ``token``: its owner, or an administrator."""
    return token.user_id == user.pk or is_token_admin(user)


def is_token_admin(user: Any) -> bool:
    """True when ``user`` may list and revoke other users' tokens: an admin on ``*``.

    The role alone decides here; a request's token is capped by its scopes in scopes.refusal.
    """
    return roles.role_in(user, roles.EVERY) == roles.ADMIN
