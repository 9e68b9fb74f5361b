"""What the dashboard stores for itself: signed webhook deliveries within the replay window."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class HookDelivery(models.Model):
    """A signed generic-webhook delivery, remembered while its timestamp is acceptable so it counts once."""

    app = models.ForeignKey("deployer.App", on_delete=models.CASCADE, related_name="+")
    # ``sha256=`` and the hex HMAC: unique, so two deliveries of one request race to one row.
    signature = models.CharField(max_length=80, unique=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"delivery to app {self.app_id} at {self.received_at:%Y-%m-%d %H:%M:%S}"


# Registered with the dashboard app: its models module is where Django looks for them.
from dashboard.audit.models import AuditEvent  # noqa: E402
from dashboard.notifications.models import (  # noqa: E402
    Delivery,
    DeliveryAttempt,
    SeenRefusal,
    Subscription,
)
from dashboard.tokens.models import ApiToken  # noqa: E402

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Delivery",
    "DeliveryAttempt",
    "HookDelivery",
    "SeenRefusal",
    "Subscription",
]
