"""Liveness of running deployments: the worker running one refreshes its heartbeat.

A worker killed mid-run (SIGKILL, OOM, a lost machine) stops beating; a periodic task
(``deployer.recover_lost``, sent by celery beat) finds RUNNING deployments whose
heartbeat is older than :data:`LOST_AFTER` and hands each to another worker, which
takes it over with a conditional update (deployer.runner.recover), so that two workers
never both run one deployment.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection
from django.db.models import Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from deployer.models import Deployment

logger = logging.getLogger(__name__)

# How often the running worker writes its heartbeat.
BEAT_SECONDS = 2.0
# A heartbeat this old means its worker is gone; many missed beats, so load is no reason.
LOST_AFTER = timedelta(seconds=20)


def stale_before(now: datetime | None = None) -> datetime:
    """Heartbeats older than this belong to lost workers."""
    return (now or timezone.now()) - LOST_AFTER


def is_stale(now: datetime | None = None) -> Q:
    """RUNNING rows whose heartbeat (or, never beaten, start) is older than LOST_AFTER."""
    return Q(status=Deployment.Status.RUNNING, beat__lt=stale_before(now))


def stale_deployments(now: datetime | None = None) -> list[tuple[int, str]]:
    """(id, worker) of RUNNING deployments whose worker stopped beating, oldest first."""
    return list(
        Deployment.objects.annotate(beat=Coalesce("heartbeat_at", "started_at", "created_at"))
        .filter(is_stale(now))
        .order_by("pk")
        .values_list("pk", "worker")
    )


def take_over(deployment_id: int, lost_worker: str, me: str) -> bool:
    """Make ``me`` the worker of a RUNNING deployment of ``lost_worker``; False if it is not lost.

    A worker that restarted under the same name (``lost_worker == me``) takes its own runs at
    once; another worker's run only once its heartbeat is stale, so a slow worker keeps its own.
    """
    rows = Deployment.objects.annotate(
        beat=Coalesce("heartbeat_at", "started_at", "created_at")
    ).filter(pk=deployment_id, status=Deployment.Status.RUNNING, worker=lost_worker)
    if lost_worker != me:
        rows = rows.filter(is_stale())
    return rows.update(worker=me, heartbeat_at=timezone.now()) == 1


class RowHeartbeat:
    """While the block runs, set ``field`` to now on ``rows`` every ``every`` seconds.

    ``rows`` names the one row being worked on and the conditions under which this process
    still owns it; the beat stops once none match (the run finished or was handed over).
    """

    def __init__(self, rows: QuerySet[Any], field: str, every: float = BEAT_SECONDS) -> None:
        self.rows = rows
        self.field = field
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> RowHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.every):
                try:
                    mine = self.rows.update(**{self.field: timezone.now()})
                except Exception:
                    # A locked or briefly unreachable database: the next beat tries again (a
                    # beat thread that died would let another worker take a live run).
                    logger.warning(
                        "heartbeat of %s failed", self.rows.model.__name__, exc_info=True
                    )
                    continue
                if not mine:
                    self.lost()
                    return
        finally:
            connection.close()  # this thread's own database connection

    def lost(self) -> None:
        """Called once no row matches any more."""


class Heartbeat(RowHeartbeat):
    """While the block runs, refresh the heartbeat of ``deployment_id`` as run by ``worker``.

    Each beat is a conditional update on the worker, so a run taken over by another worker
    stops beating for it (and says so in the worker's log).
    """

    def __init__(self, deployment_id: int, worker: str, every: float = BEAT_SECONDS) -> None:
        super().__init__(
            Deployment.objects.filter(
                pk=deployment_id, status=Deployment.Status.RUNNING, worker=worker
            ),
            "heartbeat_at",
            every,
        )
        self.deployment_id = deployment_id
        self.worker = worker

    def lost(self) -> None:
        """Say so when another worker took the run over (a finished run just stops beating)."""
        try:
            taken = Deployment.objects.filter(
                pk=self.deployment_id, status=Deployment.Status.RUNNING
            ).exists()
        except DatabaseError:
            return
        if taken:
            logger.error(
                "deployment #%s was taken over by another worker; %s stops beating for it",
                self.deployment_id,
                self.worker,
            )
