"""Make one attempt of a delivery, record it, and say whether and when to try again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dashboard.notifications import channels
from dashboard.notifications.models import Delivery, DeliveryAttempt

logger = logging.getLogger(__name__)

# The longest wait between two attempts.
MAX_BACKOFF_SECONDS = 600.0
# A delivery still pending this long after it was sent lost its task (a broker restart).
REDRIVE_AFTER = timedelta(minutes=5)
# Finished deliveries (and their attempts) are kept this long for the log.
KEEP = timedelta(days=30)
ACTIVE = (Delivery.Status.PENDING, Delivery.Status.RETRYING)


@dataclass(frozen=True)
class Outcome:
    """After an attempt: the delivery's status, and the seconds until the next try (None: no more)."""

    status: str
    retry_in: float | None = None


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: doubling, bounded."""
    base = float(settings.NOTIFY_RETRY_SECONDS)
    return min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))


def attempt(delivery_id: int) -> Outcome | None:
    """Try delivery ``delivery_id`` once and record the attempt; None when it is gone or finished.

    A failed attempt is retried (RETRYING) until settings.NOTIFY_MAX_ATTEMPTS, unless the
    target refused the request itself (a 4xx other than 408/425/429, a refused address).
    """
    delivery = Delivery.objects.select_related("subscription").filter(pk=delivery_id).first()
    if delivery is None or delivery.is_terminal:
        return None
    count = delivery.attempts + 1
    # Each attempt is claimed once: a task sent twice (the sweep, a redelivered message)
    # finds its attempt taken and sends nothing.
    claimed = Delivery.objects.filter(
        pk=delivery.pk, attempts=delivery.attempts, status__in=ACTIVE
    ).update(attempts=count)
    if not claimed:
        return None
    try:
        result = channels.send(delivery.subscription, delivery.payload, delivery.pk)
    except Exception as exc:  # a bug in a channel must not retry forever or vanish
        logger.exception("notification delivery #%s failed unexpectedly", delivery_id)
        result = channels.Result(False, error=f"internal error: {type(exc).__name__}: {exc}")
    if result.ok:
        status = Delivery.Status.DELIVERED
    elif result.permanent or count >= settings.NOTIFY_MAX_ATTEMPTS:
        status = Delivery.Status.FAILED
    else:
        status = Delivery.Status.RETRYING
    now = timezone.now()
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery,
            at=now,
            status_code=result.status_code,
            error=result.error,
            ok=result.ok,
        )
        Delivery.objects.filter(pk=delivery.pk).update(
            status=status,
            last_status_code=result.status_code,
            last_error=result.error,
            finished_at=now if status in Delivery.TERMINAL else None,
        )
    if not result.ok:
        logger.warning(
            "notification delivery #%s (%s to subscription #%s), attempt %s: %s",
            delivery.pk,
            delivery.event,
            delivery.subscription_id,
            count,
            result.error or result.status_code,
        )
    if status == Delivery.Status.RETRYING:
        return Outcome(status, backoff(count))
    return Outcome(status)


def lost(now: datetime | None = None) -> list[int]:
    """Pending deliveries whose task never reached the broker, or did long ago and never ran."""
    now = now or timezone.now()
    stale = Q(enqueued_at__isnull=True, created_at__lt=now - timedelta(seconds=30))
    stale |= Q(enqueued_at__lt=now - REDRIVE_AFTER)
    return list(
        Delivery.objects.filter(stale, status=Delivery.Status.PENDING, attempts=0)
        .order_by("id")
        .values_list("pk", flat=True)[:500]
    )


def prune(now: datetime | None = None) -> int:
    """Delete finished deliveries older than KEEP; how many."""
    now = now or timezone.now()
    old = Delivery.objects.filter(status__in=Delivery.TERMINAL, created_at__lt=now - KEEP)
    return old.delete()[1].get(Delivery._meta.label, 0)
