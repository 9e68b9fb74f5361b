"""Who may read the audit trail, and the filters the page, the exports and the API share."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from dashboard.audit.models import AuditEvent
from dashboard.audit.service import ACTIONS

try:  # Roles per namespace: admins of a namespace read its events.
    from deployer import roles
except ImportError:  # pragma: no cover - a tree without deployer.roles: staff only
    roles = None  # type: ignore[assignment]


def visible_namespaces(user: Any) -> frozenset[str] | None:
    """None when ``user`` reads every event; else the namespaces whose events it reads.

    Staff and superusers, and admins on ``*``, read everything (sign-ins and tokens too);
    an admin of some namespaces reads those namespaces' events. A request's API token
    narrows that to its namespaces; its ``read`` scope is checked by the API
    (dashboard.tokens.scopes), as for every read.
    """
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    if roles is not None and not user.is_staff:
        return roles.visible_namespaces(user, "roles", scope="read")
    if not (user.is_staff or user.is_superuser):
        return frozenset()
    token = getattr(user, "greenlight_token", None)
    return frozenset(token.namespaces) if token is not None and token.namespaces else None


def may_read(user: Any) -> bool:
    """True when ``user`` reads at least some events."""
    return visible_namespaces(user) != frozenset()


def visible_events(user: Any) -> QuerySet[AuditEvent]:
    """The events ``user`` may read, newest first."""
    visible = visible_namespaces(user)
    events = AuditEvent.objects.all()
    if visible is None:
        return events
    return events.filter(namespace__in=sorted(visible))


class AuditFilterForm(forms.Form):
    """Who, what, app, namespace and a time range; every field optional, dates in UTC."""

    user = forms.CharField(required=False, max_length=150, label="Who")
    action = forms.ChoiceField(
        required=False, choices=[("", "every action"), *ACTIONS.items()], label="What"
    )
    app = forms.CharField(required=False, max_length=100)
    namespace = forms.CharField(required=False, max_length=63)
    since = forms.DateTimeField(
        required=False, input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]
    )
    until = forms.DateTimeField(
        required=False, input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]
    )

    def clean_until(self) -> datetime | None:
        """A bare date means up to the end of that day."""
        until = self.cleaned_data.get("until")
        raw = str(self.data.get("until") or "")
        if until is not None and len(raw.strip()) == 10:
            until = timezone.make_aware(
                datetime.combine(until.date(), time.max), timezone.get_current_timezone()
            )
        return until

    def clean(self) -> dict[str, Any]:
        """Refuse a range that ends before it starts."""
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and until < since:
            self.add_error("until", "The end of the range is before its start.")
        return data

    def apply(self, events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        """``events`` narrowed by the valid filters (call is_valid() first)."""
        data = self.cleaned_data
        if data.get("user"):
            events = events.filter(username=data["user"])
        if data.get("action"):
            events = events.filter(action=data["action"])
        if data.get("app"):
            events = events.filter(app=data["app"])
        if data.get("namespace"):
            events = events.filter(namespace=data["namespace"])
        if data.get("since"):
            events = events.filter(at__gte=data["since"])
        if data.get("until"):
            events = events.filter(at__lte=data["until"])
        return events


FIELDS = (
    "id",
    "at",
    "username",
    "token",
    "ip",
    "action",
    "target_type",
    "target_id",
    "target",
    "namespace",
    "app",
    "diff",
    "details",
)


def as_dict(event: AuditEvent) -> dict[str, Any]:
    """One event as the JSON export and the API show it."""
    row = {field: getattr(event, field) for field in FIELDS}
    row["at"] = event.at.isoformat()
    return row
