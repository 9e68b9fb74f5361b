"""Celery tasks of the deployer: thin wrappers that load by id and call deployer.runner."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.utils import timezone

from deployer import heartbeat, runner
from deployer.services import enqueue_next

logger = logging.getLogger(__name__)

# A queued deployment whose task was sent this long ago and never ran lost its message (a
# broker restarted without its queue): it is sent again. One that was never sent goes at once.
REDRIVE_AFTER = timedelta(seconds=60)


def _worker(task: Any) -> str:
    """This process's incarnation of the worker running ``task``."""
    return heartbeat.worker_id(str(getattr(task.request, "hostname", "") or ""))


@shared_task(bind=True, name="deployer.run_deployment", ignore_result=True)
def run_deployment(self: Any, deployment_id: int) -> None:
    """Claim and run deployment ``deployment_id``; quietly nothing if it is gone or taken."""
    runner.run(deployment_id, worker=_worker(self))


@shared_task(name="deployer.retire_version", ignore_result=True)
def retire_version(deployment_id: int, version: int) -> None:
    """Delete a version that was kept warm, unless it is live again."""
    runner.retire(deployment_id, version)


@shared_task(bind=True, name="deployer.recover_deployment", ignore_result=True)
def recover_deployment(self: Any, deployment_id: int, lost_worker: str) -> None:
    """Finish or roll back a deployment in progress (RUNNING or AWAITING_PROMOTION) whose worker
    was lost; one awaiting promotion is rolled back, the old version serving on."""
    runner.recover(deployment_id, lost_worker, me=_worker(self))


@shared_task(name="deployer.recover_lost", ignore_result=True)
def recover_lost() -> None:
    """Every few seconds (celery beat): recover runs whose worker stopped beating; re-drive queues."""
    for deployment_id, worker in heartbeat.stale_deployments():
        logger.warning("recovering deployment #%s of lost worker %s", deployment_id, worker)
        recover_deployment.delay(deployment_id, worker)
    for app_id in runner.stalled_queues(sent_before=timezone.now() - REDRIVE_AFTER):
        enqueue_next(app_id)


@worker_ready.connect
def recover_on_worker_start(sender: Any = None, **_kwargs: Any) -> None:
    """When a worker starts, recover deployments in progress whose worker is gone; restart queues.

    Those of an earlier incarnation of this hostname are gone: this process replaced it.
    """
    me = heartbeat.worker_id(str(getattr(sender, "hostname", "") or ""))
    app = getattr(sender, "app", None)

    def alive(worker: str) -> bool:
        if app is None:
            return False
        try:
            return bool(app.control.ping(destination=[worker], timeout=1.0))
        except Exception:
            logger.warning("could not ping worker %s", worker, exc_info=True)
            return True  # unknown: do not steal its work

    try:
        for deployment_id, worker in runner.lost_deployments(me, alive):
            logger.warning("recovering deployment #%s of lost worker %s", deployment_id, worker)
            recover_deployment.delay(deployment_id, worker)
        for app_id in runner.stalled_queues():
            enqueue_next(app_id)
    except Exception:
        logger.exception("recovery of lost deployments failed")


@shared_task(name="deployer.poll_registries", ignore_result=True)
def poll_registries() -> None:
    """Registry polling: every app that follows its repository and is due (deployer.follow)."""
    from deployer import follow

    follow.poll_due()
