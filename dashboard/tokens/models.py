"""API tokens: a public prefix to find the row, a SHA-256 of the secret to check it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import ClassVar

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone

# What a token may do; the owner's own permissions still apply on top.
SCOPES: tuple[str, ...] = ("read", "deploy", "scale", "admin")
SCOPE_HELP: dict[str, str] = {
    "read": "see apps, deployments, logs, scaling and load balancers",
    "deploy": "deploy, abort, promote, reject, swap back and undeploy",
    "scale": "scale apps, scaling schedules, node groups and node actions",
    "admin": "create, change and delete apps, notifications and tokens",
}
# ApiToken.state: usable, past its expiry, or revoked.
STATES: tuple[str, ...] = ("active", "expired", "revoked")
PREFIX = "glt_"
# last_used_at is written at most this often per token, so a busy CI token costs no write per call.
LAST_USED_EVERY = timedelta(minutes=1)


def digest(secret: str) -> str:
    """The stored form of a token's secret (hex SHA-256; the secret is random, so no salt)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split(raw: str) -> tuple[str, str] | None:
    """``glt_<prefix>_<secret>`` as (prefix, secret); None when ``raw`` is not in that form."""
    if not raw.startswith(PREFIX):
        return None
    prefix, sep, secret = raw[len(PREFIX) :].partition("_")
    if not sep or len(prefix) != 12 or not secret:
        return None
    return prefix, secret


class ApiToken(models.Model):
    """A user's API token: it acts as its owner, capped by ``scopes``, ``namespaces`` and expiry."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # Public: shown in lists and used to find the row; the secret is only in ``secret_hash``.
    prefix = models.CharField(max_length=12, unique=True)
    secret_hash = models.CharField(max_length=64)
    # A subset of SCOPES.
    scopes = models.JSONField(default=list)
    # Namespace names; empty means every namespace the owner may use.
    namespaces = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering: ClassVar[list[str]] = ["-created_at", "-id"]
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["user", "name"],
                condition=Q(revoked_at__isnull=True),
                name="api_token_unique_live_name_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({PREFIX}{self.prefix}…)"

    @classmethod
    def issue(
        cls,
        user: models.Model,
        name: str,
        scopes: list[str],
        namespaces: list[str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiToken, str]:
        """Store a new token and return it with its full text, which is never stored or shown again."""
        for _ in range(5):
            prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
            token = cls(
                user=user,
                name=name,
                prefix=prefix,
                secret_hash=digest(secret),
                scopes=[scope for scope in SCOPES if scope in scopes],
                namespaces=sorted(set(namespaces or [])),
                expires_at=expires_at,
            )
            try:
                with transaction.atomic():
                    token.save()
            except IntegrityError:
                # A prefix already taken (48 random bits) or a live token of that name.
                if cls.objects.filter(user=user, name=name, revoked_at__isnull=True).exists():
                    raise
                continue
            return token, f"{PREFIX}{prefix}_{secret}"
        raise IntegrityError("no free token prefix after 5 tries")

    def matches(self, secret: str) -> bool:
        """True when ``secret`` is this token's, compared in constant time."""
        return hmac.compare_digest(digest(secret), self.secret_hash)

    @property
    def masked(self) -> str:
        """The token as lists show it: its public prefix only."""
        return f"{PREFIX}{self.prefix}_…"

    def expired(self, now: datetime | None = None) -> bool:
        """True once ``expires_at`` has passed."""
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def state(self) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expired() else "active"

    def revoke(self, by: models.Model | None = None) -> bool:
        """Revoke now; False when it was revoked already (the first revocation stands)."""
        now = timezone.now()
        done = ApiToken.objects.filter(pk=self.pk, revoked_at__isnull=True).update(
            revoked_at=now, revoked_by=by
        )
        self.refresh_from_db(fields=["revoked_at", "revoked_by"])
        return done == 1

    def mark_used(self, now: datetime | None = None) -> bool:
        """Record a use; True when this call wrote it (at most one per LAST_USED_EVERY, races included)."""
        now = now or timezone.now()
        if self.last_used_at is not None and now - self.last_used_at < LAST_USED_EVERY:
            return False
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_EVERY)
        if not ApiToken.objects.filter(stale, pk=self.pk).update(last_used_at=now):
            return False
        self.last_used_at = now
        return True

    def allows_namespace(self, namespace: str) -> bool:
        """True when the token is not limited to namespaces, or ``namespace`` is one of them."""
        return not self.namespaces or namespace in self.namespaces
