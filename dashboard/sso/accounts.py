"""Users and groups from a provider's claims: one user per subject, groups that follow the claim."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.db import IntegrityError, transaction

from dashboard.sso.models import Identity

logger = logging.getLogger(__name__)

USERNAME_MAX = 150
GROUP_NAME_MAX = 150
# Django's username validator: letters, digits and @ . + - _
_NOT_IN_USERNAME = re.compile(r"[^\w.@+-]")


class ClaimsError(Exception):
    """The provider's claims cannot make a user (no subject, a malformed group claim)."""


def wanted_username(claims: Mapping[str, Any]) -> str:
    """preferred_username, else email, else sub, in the characters Django's usernames allow."""
    for name in ("preferred_username", "email", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            cleaned = _NOT_IN_USERNAME.sub("-", value.strip())[:USERNAME_MAX]
            if cleaned.strip("-"):
                return cleaned
    raise ClaimsError("the provider sent no sub claim")


def _free_username(wanted: str, *, keep: Any = None) -> str:
    """``wanted`` if no other user has it, else ``wanted-2``, ``wanted-3``...: never an
    existing account's name, so a provider's user cannot take over a local one."""
    users = get_user_model().objects.exclude(pk=keep) if keep else get_user_model().objects
    candidate = wanted
    suffix = 2
    while users.filter(username__iexact=candidate).exists():
        tail = f"-{suffix}"
        candidate = wanted[: USERNAME_MAX - len(tail)] + tail
        suffix += 1
    return candidate


def group_names(claims: Mapping[str, Any], claim: str, prefix: str) -> set[str]:
    """The Django group names the group claim gives: each value with ``prefix``.

    A missing claim is no groups; a claim that is neither a list of strings nor a string
    is a ClaimsError, so a provider's mistake never empties a user's groups silently.
    """
    value = claims.get(claim)
    if value is None:
        return set()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ClaimsError(f"the {claim!r} claim must be a list of group names, got {value!r}")
    names = set()
    for item in value:
        name = prefix + item.strip()
        if not item.strip() or len(name) > GROUP_NAME_MAX:
            logger.warning("single sign-on: group %r from the %r claim skipped", item, claim)
            continue
        names.add(name)
    return names


def sync_groups(user: AbstractUser, names: set[str], prefix: str) -> None:
    """Make the user's groups that start with ``prefix`` exactly ``names`` (created as needed).

    Groups without the prefix (made in Greenlight) are neither joined nor left.
    """
    groups = []
    for name in sorted(names):
        group, _ = Group.objects.get_or_create(name=name)
        groups.append(group)
    stale = user.groups.filter(name__startswith=prefix).exclude(name__in=names)
    user.groups.remove(*stale)
    user.groups.add(*groups)


def user_for_claims(claims: Mapping[str, Any], *, issuer: str) -> AbstractUser:
    """The user bound to the claims' subject at ``issuer``, created on first sign-in and
    renamed, re-mailed and re-named to follow the provider."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise ClaimsError("the provider sent no sub claim")
    if len(subject) > 255:
        raise ClaimsError("the provider's sub claim is longer than 255 characters")
    wanted = wanted_username(claims)
    details = {
        "email": claims.get("email") if isinstance(claims.get("email"), str) else "",
        "first_name": str(claims.get("given_name") or "")[:150],
        "last_name": str(claims.get("family_name") or "")[:150],
    }
    identity = Identity.objects.select_related("user").filter(issuer=issuer, subject=subject)
    found = identity.first()
    if found is None:
        try:
            with transaction.atomic():
                user = get_user_model().objects.create_user(_free_username(wanted), **details)
                user.set_unusable_password()
                user.save(update_fields=["password"])
                Identity.objects.create(user=user, issuer=issuer, subject=subject)
        except IntegrityError:
            # A first sign-in of the same subject in another tab won the race: use its user.
            found = identity.get()
        else:
            logger.info(
                "single sign-on: created user %s for %s at %s", user.username, subject, issuer
            )
            return user
    user = found.user
    changed = [field for field, value in details.items() if getattr(user, field) != value]
    for field in changed:
        setattr(user, field, details[field])
    username = _free_username(wanted, keep=user.pk)
    if username != user.username:
        logger.info("single sign-on: user %s is now %s (%s)", user.username, username, subject)
        user.username = username
        changed.append("username")
    if changed:
        user.save(update_fields=changed)
    return user
