"""The Celery application; tasks live in each Django app's ``tasks`` module."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

# How often celery beat sends deployer.recover_lost (lost workers, stalled per-app queues).
RECOVERY_SECONDS = 5.0
# How often celery beat looks for apps whose registry poll is due (deployer.follow).
REGISTRY_POLL_SECONDS = 10.0

app = Celery("greenlight")


@app.on_after_configure.connect
def schedule_recovery(sender: Celery, **_kwargs: Any) -> None:
    """Beat sends deployer.recover_lost every RECOVERY_SECONDS."""
    sender.add_periodic_task(
        RECOVERY_SECONDS, sender.signature("deployer.recover_lost"), name="deployer-recover-lost"
    )
    # Registry polling: each app keeps its own interval; this only looks for due ones.
    sender.add_periodic_task(
        REGISTRY_POLL_SECONDS,
        sender.signature("deployer.poll_registries"),
        name="deployer-poll-registries",
    )


app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    # A broker that stops answering fails a send within 2 s instead of holding a web request
    # (Celery's default is retries and no socket timeout): the caller keeps the work as a
    # QUEUED row and the periodic recovery sends it again once the broker is back. A broker
    # that restarted needs no retry: the client reconnects on its own.
    broker_transport_options={"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
    task_publish_retry_policy={"max_retries": 0},
)
app.autodiscover_tasks()
