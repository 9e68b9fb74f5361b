"""Turn an emitted event into deliveries: one row per matching subscription, sent after commit."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dashboard.notifications.messages import build_payload
from dashboard.notifications.models import Delivery, Subscription
from deployer import taskqueue

logger = logging.getLogger(__name__)

DELIVER = "dashboard.notifications.deliver"


def matching(event: str, app: Any) -> list[Subscription]:
    """The enabled subscriptions of ``event``: global ones, and those of ``app``."""
    scope = Q(app__isnull=True)
    if app is not None:
        scope |= Q(app_id=app.pk)
    # Filtered in Python: JSON containment is not portable to SQLite, and there are few rows.
    return [s for s in Subscription.objects.filter(scope, enabled=True) if s.wants(event)]


def on_event(
    sender: Any,
    *,
    event: str,
    message: str,
    app: Any = None,
    deployment: Any = None,
    scaling_run: Any = None,
    details: dict[str, Any] | None = None,
    **_kwargs: Any,
) -> list[int]:
    """Record a Delivery per subscription of ``event`` and send their tasks once committed.

    In its own savepoint: a failure here leaves the emitter's transaction usable.
    """
    with transaction.atomic():
        subscriptions = matching(event, app)
        if not subscriptions:
            return []
        payload = build_payload(
            event, message, app=app, deployment=deployment, scaling_run=scaling_run, details=details
        )
        rows = Delivery.objects.bulk_create(
            Delivery(subscription=s, event=event, payload=dict(payload)) for s in subscriptions
        )
    ids = [row.pk for row in rows]
    transaction.on_commit(lambda: enqueue(ids))
    return ids


def enqueue(delivery_ids: list[int]) -> None:
    """Send the delivery task of each id; a broker that does not answer leaves them pending.

    The periodic sweep (dashboard.notifications.sweep) sends those again.
    """
    sent = []
    for delivery_id in delivery_ids:
        try:
            taskqueue.send(DELIVER, delivery_id)
        except Exception as exc:
            logger.warning("could not enqueue notification delivery #%s: %s", delivery_id, exc)
            continue
        sent.append(delivery_id)
    if sent:
        Delivery.objects.filter(pk__in=sent).update(enqueued_at=timezone.now())
