"""What the Celery tasks call: claim a deployment, wire real collaborators, run, recover."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery

from deployer import events, logsink, taskqueue
from deployer.cluster import KubeCluster
from deployer.errors import BackendError
from deployer.etcdstore import EtcdStore
from deployer.health import HttpHealthChecker
from deployer.heartbeat import Heartbeat, hostname_of, take_over
from deployer.kinds import WORKFLOWS
from deployer.logsink import deployment_log, level_first
from deployer.models import App, Deployment
from deployer.rotation import ServingPod, StillRouted, take_out
from deployer.services import enqueue_next
from deployer.workflow import RETIRE_RETRY_SECONDS, SystemClock, Timing, Workflow, backend_name

logger = logging.getLogger(__name__)


def claim(deployment_id: int, worker: str) -> Deployment | None:
    """QUEUED -> RUNNING when no earlier deployment of the same app is active; else None."""
    with transaction.atomic():
        rows = Deployment.objects.filter(pk=deployment_id)
        app_id = rows.values_list("app_id", flat=True).first()
        if app_id is None:
            return None
        # The app's row serializes claims per app, and the deployment's row an abort against
        # this claim, so its status is read only once no one else can change it (SQLite
        # serializes every write transaction anyway).
        App.objects.select_for_update().filter(pk=app_id).first()
        deployment = rows.select_for_update(of=("self",)).select_related("app").first()
        if deployment is None or deployment.status != Deployment.Status.QUEUED:
            return None
        earlier = Q(status__in=Deployment.IN_PROGRESS) | Q(created_at__lt=deployment.created_at)
        earlier |= Q(created_at=deployment.created_at, pk__lt=deployment.pk)
        blocker = (
            Deployment.objects.filter(app_id=deployment.app_id, status__in=Deployment.ACTIVE)
            .exclude(pk=deployment.pk)
            .filter(earlier)
            .first()
        )
        if blocker is not None:
            return None  # it runs when the blocker finishes (see enqueue_next)
        deployment.start(worker=worker)
        logsink.append(deployment, f"Started on worker {hostname_of(worker)}.", step="queue")
        logsink.status_changed(deployment)
    return deployment


def schedule_retire(deployment_id: int, version: int, delay: float) -> None:
    """Retire ``version`` after ``delay`` seconds, unless it is live again by then."""
    taskqueue.send(taskqueue.RETIRE_VERSION, deployment_id, version, countdown=delay)


def _port_suffix(url: str) -> str:
    port = urlsplit(url).port
    return f":{port}" if port and port != 80 else ""


@contextmanager
def workflow_for(deployment: Deployment) -> Iterator[Workflow]:
    """The workflow of the deployment's kind on the real cluster, etcd, HTTP health checker, clock
    and log sink."""
    store = EtcdStore()
    try:
        yield WORKFLOWS[deployment.kind](
            deployment=deployment,
            cluster=KubeCluster(),
            lb=store,
            health=HttpHealthChecker(),
            clock=SystemClock(),
            sink=deployment_log(deployment),
            schedule_retire=schedule_retire,
            lb_port_suffix=_port_suffix(settings.LB_URL),
        )
    finally:
        store.close()


def _fail_without_workflow(deployment: Deployment, exc: Exception) -> None:
    logger.exception("deployment #%s could not start its workflow", deployment.pk)
    logsink.append(deployment, f"Could not start: {exc}", level="error")
    deployment.refresh_from_db()
    if not deployment.is_terminal:
        deployment.fail(f"could not reach the cluster or etcd: {exc}")
        logsink.status_changed(deployment)
        events.emit(
            "failed",
            f"{deployment.get_kind_display()} #{deployment.pk} of {deployment.app} failed: "
            f"{deployment.failure_reason}",
            deployment=deployment,
            details={"reason": deployment.failure_reason},
        )


def run(deployment_id: int, worker: str) -> None:
    """Claim and run one deployment; then start the next queued one of the same app."""
    deployment = claim(deployment_id, worker)
    if deployment is None:
        return
    try:
        with workflow_for(deployment) as workflow, Heartbeat(deployment.pk, worker):
            workflow.execute()
    except (BackendError, OSError) as exc:
        _fail_without_workflow(deployment, exc)
    finally:
        logsink.flush()
        enqueue_next(deployment.app_id)


def retire(deployment_id: int, version: int) -> None:
    """Delete a kept-warm version unless it became live again."""
    deployment = Deployment.objects.select_related("app").filter(pk=deployment_id).first()
    if deployment is None:
        return
    app = deployment.app
    if app.live_version == version:
        return
    namespace, name = deployment.descriptor["namespace"], deployment.descriptor["name"]
    store = EtcdStore()
    try:
        frontend = store.get_frontend(app.frontend) or {}
        if frontend.get("backend") == backend_name(namespace, name, version):
            return  # swapped back to it meanwhile
        cluster = KubeCluster()
        timeout = float(Timing().drain_timeout)
        try:
            take_out(
                store,
                [
                    ServingPod(namespace, p.name, p.app, p.version)
                    for p in cluster.pods(namespace, name, version)
                ],
                timeout=timeout,
                log=level_first(deployment_log(deployment), "retire"),
            )
        except StillRouted as exc:
            # Tried again until that load balancer is back, forgotten or its HAProxy gone.
            delay = max(RETIRE_RETRY_SECONDS, 3 * timeout)
            schedule_retire(deployment_id, version, delay)
            logsink.append(
                deployment,
                f"Retiring v{version} deferred again by {delay:.0f}s: {exc}; it keeps running "
                "until then.",
                level="warning",
                step="retire",
            )
            logsink.flush()
            return
        cluster.delete_version(namespace, name, version)
        store.delete_backend(backend_name(namespace, name, version))
    finally:
        store.close()
    logsink.append(deployment, f"Retired v{version} after keeping it warm.", step="retire")
    logsink.flush()


def recover(deployment_id: int, lost_worker: str, me: str) -> None:
    """Take over a deployment in progress of a lost worker and finish or roll it back.

    ``lost_worker`` and ``me`` are worker incarnations (deployer.heartbeat.worker_id).
    """
    if not take_over(deployment_id, lost_worker, me):
        return  # another worker recovered it, it finished, or its worker still beats
    deployment = Deployment.objects.select_related("app").get(pk=deployment_id)
    try:
        with workflow_for(deployment) as workflow, Heartbeat(deployment.pk, me):
            workflow.recover(hostname_of(lost_worker))
    except (BackendError, OSError) as exc:
        _fail_without_workflow(deployment, exc)
    finally:
        logsink.flush()
        enqueue_next(deployment.app_id)


def lost_deployments(me: str, alive: Callable[[str], bool]) -> list[tuple[int, str]]:
    """(id, worker) of deployments in progress (RUNNING or AWAITING_PROMOTION) of an earlier
    incarnation of ``me`` or of a worker whose hostname does not answer ``alive``; never
    those of ``me`` itself."""
    lost = []
    mine = hostname_of(me)
    for pk, worker in Deployment.objects.filter(status__in=Deployment.IN_PROGRESS).values_list(
        "pk", "worker"
    ):
        if worker == me:
            continue
        hostname = hostname_of(worker)
        if not worker or hostname == mine or not alive(hostname):
            lost.append((pk, worker))
    return lost


def stalled_queues(sent_before: datetime | None = None) -> list[int]:
    """Apps with QUEUED deployments and none in progress (e.g. enqueued while the broker was down).

    With ``sent_before``, only apps whose oldest queued deployment never reached the broker
    or was last sent before then (a broker restarted without its queue loses the message).
    """
    running = Deployment.objects.filter(status__in=Deployment.IN_PROGRESS).values("app_id")
    queued = Deployment.objects.filter(status=Deployment.Status.QUEUED).exclude(app_id__in=running)
    if sent_before is not None:
        oldest = (
            Deployment.objects.filter(app_id=OuterRef("app_id"), status=Deployment.Status.QUEUED)
            .order_by("created_at", "id")
            .values("pk")[:1]
        )
        queued = queued.filter(pk=Subquery(oldest)).filter(
            Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=sent_before)
        )
    return list(queued.values_list("app_id", flat=True).distinct())
