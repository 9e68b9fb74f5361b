"""Who hears of which events, and what was sent to them: subscriptions, deliveries, attempts."""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone

from deployer.events import EVENTS


def new_secret() -> str:
    """A fresh signing secret for a generic webhook subscription."""
    return secrets.token_urlsafe(32)


class Subscription(models.Model):
    """Deliver ``events`` of ``app`` (of every app when None) over ``channel`` to ``target``."""

    class Channel(models.TextChoices):
        SLACK = "slack", "Slack incoming webhook"
        TEAMS = "teams", "Microsoft Teams incoming webhook"
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Signed webhook"

    URL_CHANNELS: ClassVar[frozenset[str]] = frozenset(
        {Channel.SLACK, Channel.TEAMS, Channel.WEBHOOK}
    )

    name = models.CharField(max_length=100)
    app = models.ForeignKey(
        "deployer.App",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="subscriptions",
        help_text="Empty: every app, and the events that belong to no app.",
    )
    # Names from deployer.events.EVENTS.
    events = models.JSONField(default=list)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    # A URL for the webhook channels; comma-separated addresses for email.
    target = models.CharField(max_length=2000)
    # The HMAC key of the webhook channel (empty for the others); shown once, then masked.
    secret = models.CharField(max_length=64, blank=True, default="")
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering: ClassVar[list[str]] = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def scope(self) -> str:
        """The app's name, or "every app"."""
        return str(self.app) if self.app_id else "every app"

    @property
    def event_titles(self) -> list[str]:
        """The subscribed events as the page lists them."""
        return [EVENTS.get(name, name) for name in self.events]

    @property
    def masked_secret(self) -> str:
        """The secret's last four characters behind dots; "" without a secret."""
        return f"••••{self.secret[-4:]}" if self.secret else ""

    def wants(self, event: str) -> bool:
        """True when this subscription is on and lists ``event``."""
        return self.enabled and event in self.events


class Delivery(models.Model):
    """One event for one subscription: what is sent, how often it was tried, and how it ended."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RETRYING = "retrying", "Retrying"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    TERMINAL: ClassVar[frozenset[str]] = frozenset({Status.DELIVERED, Status.FAILED})

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=32)
    # What the channels render: event, title, message, app, version, reason, url, details...
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering: ClassVar[list[str]] = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event} to {self.subscription_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        """True once delivered or given up."""
        return self.status in self.TERMINAL

    @property
    def badge(self) -> str:
        """The badge style of the status: that of the deployment status it resembles."""
        styles = {"delivered": "succeeded", "failed": "failed", "retrying": "running"}
        return styles.get(self.status, "queued")


class DeliveryAttempt(models.Model):
    """One try of a delivery: when, the HTTP status code (if any) and the error (if any)."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    ok = models.BooleanField(default=False)

    class Meta:
        ordering: ClassVar[list[str]] = ["at", "id"]

    def __str__(self) -> str:
        return f"attempt at {self.at:%H:%M:%S}: {self.status_code or self.error[:40]}"


class SeenRefusal(models.Model):
    """A configuration a load balancer refused, announced once (lb_refused_config)."""

    balancer = models.CharField(max_length=63)
    revision = models.PositiveBigIntegerField()
    seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["balancer", "revision"], name="seen_refusal_once")
        ]

    def __str__(self) -> str:
        return f"{self.balancer} refused revision {self.revision}"
