"""Liveness of running deployments: the worker running one refreshes its heartbeat.

A worker killed mid-run (SIGKILL, OOM, a lost machine) stops beating; a periodic task
(``deployer.recover_lost``, sent by celery beat) finds deployments in progress (RUNNING,
or AWAITING_PROMOTION: a run waiting for Promote keeps beating) whose
heartbeat is older than :data:`LOST_AFTER` and hands each to another worker, which
takes it over with a conditional update (deployer.runner.recover), so that two workers
never both run one deployment.

A deployment records the incarnation of the worker running it (:func:`worker_id`): the
Celery hostname plus a token made when the process started. One worker process runs many
deployments on its threads under one hostname, so a recovery that lands on the process
running the deployment never takes it; a worker restarted under the same hostname is a new
incarnation and takes its predecessor's runs at once.
"""

from __future__ import annotations

import logging
import secrets
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
# A heartbeat this old means its worker is gone. On SQLite one beat may wait up to the busy
# timeout (20 s, dashboard.settings) for the write lock and then fail, and the next one is
# a beat interval later: a live worker under load can be silent for 2 x (20 + 2) s, so only
# longer silence counts as lost. The run stops on its own anyway once it sees it was taken
# over (deployer.workflow), but rolling back a live run is what this bound prevents.
LOST_AFTER = timedelta(seconds=60)

# This process's incarnation: made once at start, so a restarted worker differs from the one
# it replaces even under the same Celery hostname.
INCARNATION = secrets.token_hex(4)
_SEPARATOR = "#"


def worker_id(hostname: str) -> str:
    """What a deployment run by this process records as its worker: hostname#incarnation."""
    return f"{hostname}{_SEPARATOR}{INCARNATION}"


def hostname_of(worker: str) -> str:
    """The Celery hostname of a recorded worker (what answers a ping, and what logs show)."""
    return worker.partition(_SEPARATOR)[0]


def stale_before(now: datetime | None = None) -> datetime:
    """Heartbeats older than this belong to lost workers."""
    return (now or timezone.now()) - LOST_AFTER


def is_stale(now: datetime | None = None) -> Q:
    """Rows in progress (RUNNING or AWAITING_PROMOTION) whose heartbeat (or, never beaten,
    start) is older than LOST_AFTER."""
    return Q(status__in=Deployment.IN_PROGRESS, beat__lt=stale_before(now))


def stale_deployments(now: datetime | None = None) -> list[tuple[int, str]]:
    """(id, worker) of deployments in progress whose worker stopped beating, oldest first."""
    return list(
        Deployment.objects.annotate(beat=Coalesce("heartbeat_at", "started_at", "created_at"))
        .filter(is_stale(now))
        .order_by("pk")
        .values_list("pk", "worker")
    )


def take_over(deployment_id: int, lost_worker: str, me: str) -> bool:
    """Make ``me`` the worker of a deployment in progress of ``lost_worker``; False if not lost.

    ``me`` never takes a run of its own incarnation: another thread of this process runs it,
    however late its heartbeat. A new incarnation of the same hostname (the worker restarted)
    takes its predecessor's runs at once; any other worker only once the heartbeat is stale,
    so a slow worker keeps its own.
    """
    if lost_worker == me:
        return False
    rows = Deployment.objects.annotate(
        beat=Coalesce("heartbeat_at", "started_at", "created_at")
    ).filter(pk=deployment_id, status__in=Deployment.IN_PROGRESS, worker=lost_worker)
    if hostname_of(lost_worker) != hostname_of(me):
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
                pk=deployment_id, status__in=Deployment.IN_PROGRESS, worker=worker
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
                pk=self.deployment_id, status__in=Deployment.IN_PROGRESS
            ).exists()
        except DatabaseError:
            return
        if taken:
            logger.error(
                "deployment #%s was taken over by another worker; %s stops beating for it",
                self.deployment_id,
                self.worker,
            )
