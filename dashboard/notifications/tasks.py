"""Celery tasks of the notifications: thin wrappers around delivery, the listener and refusals."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from dashboard.notifications import delivery, listener
from dashboard.notifications.refusals import announce_refusals
from deployer.errors import StoreError
from deployer.etcdstore import EtcdStore

logger = logging.getLogger(__name__)


@shared_task(bind=True, name=listener.DELIVER, ignore_result=True, max_retries=None)
def deliver(self: Any, delivery_id: int) -> None:
    """Try delivery ``delivery_id`` once; ask Celery to try again after the backoff if it says so.

    The number of attempts is bounded by delivery.attempt (settings.NOTIFY_MAX_ATTEMPTS).
    """
    outcome = delivery.attempt(delivery_id)
    if outcome is not None and outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)


@shared_task(name="dashboard.notifications.sweep", ignore_result=True)
def sweep() -> None:
    """Every few seconds (celery beat): send lost deliveries again, forget old ones, announce
    refused configurations."""
    delivery.prune()
    lost = delivery.lost()
    if lost:
        logger.warning("sending %s lost notification deliveries again", len(lost))
        listener.enqueue(lost)
    try:
        with EtcdStore() as store:
            announce_refusals(store)
    except StoreError as exc:
        logger.warning("could not read the load balancers for refused configurations: %s", exc)
