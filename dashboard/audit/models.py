"""AuditEvent: one user action, written once and never changed or removed through Django.

A small model of the project's own rather than a library: django-pghistory records through
PostgreSQL triggers, and ``make run`` runs on SQLite; django-auditlog (and pghistory) record
model saves, so a deploy's own status writes would read as changes while a deploy, a login or
a node drain, which are not one model's save, would not be recorded at all. Here the views,
the API and deployer.services call :func:`dashboard.audit.service.record` where a user acts.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models
from django.utils import timezone


class AppendOnly(Exception):
    """Raised on any attempt to change or delete a recorded audit event."""


REFUSAL = "Audit events are append-only: they cannot be changed or deleted."


class AuditQuerySet(models.QuerySet["AuditEvent"]):
    """A queryset that refuses bulk updates and deletes."""

    def update(self, **kwargs: Any) -> NoReturn:
        """Always refused."""
        raise AppendOnly(REFUSAL)

    def delete(self) -> NoReturn:  # type: ignore[override]
        """Always refused."""
        raise AppendOnly(REFUSAL)

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Always refused."""
        raise AppendOnly(REFUSAL)

    def update_or_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Always refused."""
        raise AppendOnly(REFUSAL)


class AuditEvent(models.Model):
    """Who (user, and the API token's name when one was used), when, from where, did what to what.

    ``diff`` maps each changed field to ``[before, after]``; an ``env`` change names only the
    keys added, removed and changed. ``save()`` inserts once and refuses updates; ``delete()``
    and the queryset's update/delete refuse.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=40, db_index=True)
    # The user as they were when acting: kept as text so the record outlives the account.
    user_id = models.IntegerField(null=True, blank=True)
    username = models.CharField(max_length=150, blank=True, db_index=True)
    token = models.CharField(max_length=100, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target = models.CharField(max_length=255, blank=True)
    namespace = models.CharField(max_length=63, blank=True, db_index=True)
    app = models.CharField(max_length=100, blank=True, db_index=True)
    diff = models.JSONField(default=dict, blank=True)
    details = models.JSONField(default=dict, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ("-at", "-id")
        indexes = [models.Index(fields=["namespace", "at"], name="audit_namespace_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Insert the event; AppendOnly when it was saved before."""
        if not self._state.adding or self.pk is not None:
            raise AppendOnly(REFUSAL)
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        """Always refused."""
        raise AppendOnly(REFUSAL)

    @property
    def actor(self) -> str:
        """``username``, or ``username (token NAME)`` for an API call made with a token."""
        who = self.username or "system"
        return f"{who} (token {self.token})" if self.token else who
