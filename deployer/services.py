"""What the dashboard, the REST API, webhooks and scaling call: validate, record, enqueue, return.

Side effects that take time (Kubernetes, etcd, HAProxy) happen in the worker; these
functions only validate, write rows and enqueue the Celery task after commit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from dashboard.audit.service import record
from deployer import events, logsink, taskqueue
from deployer.cluster import KubeCluster
from deployer.errors import (
    AppBusy,
    DeployError,
    InvalidRequest,
    KubeError,
    NothingToDo,
    StoreError,
)
from deployer.etcdstore import EtcdStore
from deployer.models import App, Deployment
from deployer.rotation import LogFn, PodRotation
from deployer.scaledown import scale_version
from deployer.status import warm_previous_version
from deployer.validation import (
    termination_grace_seconds,
    validate_app,
    validate_image,
    validate_replicas,
)

logger = logging.getLogger(__name__)


def _who(user: Any) -> str:
    return getattr(user, "username", "") or "system"


def _messages(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)


def enqueue(deployment_id: int) -> None:
    """Send the run task for ``deployment_id`` and note when; a broker outage leaves it QUEUED.

    A deployment whose send failed is sent again by the periodic recovery
    (deployer.recover_lost) once the broker answers, or by the next worker start.
    """
    try:
        taskqueue.send(taskqueue.RUN_DEPLOYMENT, deployment_id)
    except Exception as exc:
        logger.warning("could not enqueue deployment #%s: %s", deployment_id, exc)
        logsink.append(
            deployment_id,
            f"The task queue did not answer ({type(exc).__name__}); this deployment stays "
            "queued and starts once the queue is back.",
            level="warning",
            step="queue",
        )
        return
    Deployment.objects.filter(pk=deployment_id, status=Deployment.Status.QUEUED).update(
        enqueued_at=timezone.now()
    )


def _active_other(app: App, exclude: int | None = None) -> Deployment | None:
    others = Deployment.objects.filter(app=app, status__in=Deployment.ACTIVE).order_by(
        "created_at", "id"
    )
    if exclude is not None:
        others = others.exclude(pk=exclude)
    running = others.filter(status__in=Deployment.IN_PROGRESS).first()
    return running or others.first()


def _waiting_line(app: App, other: Deployment) -> str:
    """The queue line of a deployment that waits for ``other``; says when it awaits promotion."""
    if other.status == Deployment.Status.AWAITING_PROMOTION:
        return (
            f"Waiting for deployment #{other.pk} of {app}, which awaits promotion: it starts "
            "once that one is promoted and finished, or rejected. One runs at a time."
        )
    return f"Waiting for deployment #{other.pk} of {app} to finish; one runs at a time."


def _pending_undeploy(app: App) -> Deployment | None:
    return Deployment.objects.filter(
        app=app, kind=Deployment.Kind.UNDEPLOY, status__in=Deployment.ACTIVE
    ).first()


def _create(
    app: App,
    *,
    kind: str,
    image: str,
    user: Any,
    trigger: str,
    detail: str,
    descriptor: dict[str, Any],
    version: int | None = None,
    first_line: str,
) -> Deployment:
    deployment = Deployment.objects.create(
        app=app,
        kind=kind,
        image=image,
        descriptor=descriptor,
        trigger=trigger,
        triggered_by=user if getattr(user, "pk", None) else None,
        trigger_detail=detail[:255],
        version=version,
    )
    logsink.append(deployment, first_line, step="queue")
    other = _active_other(app, exclude=deployment.pk)
    if other is not None:
        logsink.append(deployment, _waiting_line(app, other), step="queue")
    logsink.status_changed(deployment)
    events.emit("queued", first_line, deployment=deployment)
    transaction.on_commit(lambda: enqueue(deployment.pk))
    return deployment


def request_deploy(
    app: App,
    *,
    user: Any = None,
    image: str | None = None,
    trigger: str = Deployment.Trigger.UI,
    detail: str = "",
) -> Deployment:
    """Validate, create a QUEUED deployment with the descriptor snapshot, enqueue it after commit."""
    image = (image or app.image).strip()
    try:
        validate_image(image)
    except ValidationError as exc:
        raise InvalidRequest(_messages(exc)) from None
    if trigger not in Deployment.Trigger.values:
        raise InvalidRequest(f"Unknown trigger {trigger!r}.")
    with transaction.atomic():
        # The app row is the per-app lock (a no-op on SQLite, whose writes are serialized).
        app = App.objects.select_for_update().get(pk=app.pk)
        if _pending_undeploy(app) is not None:
            raise AppBusy(f"{app} is being undeployed; deploy again once that has finished.")
        try:
            validate_app(app)
        except ValidationError as exc:
            raise InvalidRequest(f"Fix the app first: {_messages(exc)}") from None
        descriptor = app.snapshot()
        descriptor["image"] = image
        deployment = _create(
            app,
            kind=Deployment.Kind.DEPLOY,
            image=image,
            user=user,
            trigger=trigger,
            detail=detail,
            descriptor=descriptor,
            first_line=f"Deploy of {image} queued by {_who(user)} ({trigger}).",
        )
        record(user or str(trigger), "deploy", deployment, image=image, trigger=trigger)
        return deployment


def request_abort(deployment: Deployment, user: Any = None) -> Deployment:
    """Abort a queued deployment now, or ask a running one to stop and roll back at its next check."""
    with transaction.atomic():
        current = Deployment.objects.select_for_update(no_key=True).get(pk=deployment.pk)
        if current.is_terminal:
            raise NothingToDo(f"Deployment #{current.pk} has already {current.status}.")
        if current.status == Deployment.Status.QUEUED:
            current.abort(f"aborted by {_who(user)} before it started")
            logsink.append(current, f"Aborted by {_who(user)} before it started.", level="warning")
            logsink.status_changed(current)
            events.emit(
                "aborted",
                f"{current.get_kind_display()} #{current.pk} of {current.app} was aborted by "
                f"{_who(user)} before it started.",
                deployment=current,
                details={"reason": current.failure_reason},
            )
            app_id = current.app_id
            transaction.on_commit(lambda: enqueue_next(app_id))
        else:
            Deployment.objects.filter(pk=current.pk).update(abort_requested=True)
            current.abort_requested = True
            logsink.append(
                current,
                f"Abort requested by {_who(user)}; rolling back at the next step."
                if current.status == Deployment.Status.RUNNING
                else f"Abort requested by {_who(user)}; rolling back now.",
                level="warning",
            )
        record(user, "abort", current, status=current.status)
    return current


def request_promotion(deployment: Deployment, decision: str, user: Any = None) -> Deployment:
    """Promote (the switch goes on) or reject (it rolls back) a deployment awaiting promotion.

    The run, which checks every half second, acts on it. NothingToDo when the deployment
    does not await promotion (any more), or an abort was asked for.
    """
    if decision not in Deployment.Decision.values:
        raise InvalidRequest(
            f"Unknown decision {str(decision)[:20]!r}: choose {' or '.join(Deployment.Decision.values)}."
        )
    with transaction.atomic():
        current = Deployment.objects.select_for_update(no_key=True).get(pk=deployment.pk)
        if current.status != Deployment.Status.AWAITING_PROMOTION:
            raise NothingToDo(
                f"Deployment #{current.pk} is {current.get_status_display().lower()}, not "
                "awaiting promotion: only a deployment that waits after its health checks can "
                "be promoted or rejected."
            )
        if current.abort_requested:
            raise NothingToDo(f"Deployment #{current.pk} is being aborted.")
        current.stop_awaiting(decision, user=user)
        if decision == Deployment.Decision.PROMOTE:
            line = f"Promoted by {_who(user)}; switching traffic to v{current.version}."
        else:
            line = f"Rejected by {_who(user)}; rolling back v{current.version}."
        logsink.append(current, line, level="info", step="promotion")
        logsink.status_changed(current)
        record(user, str(decision), current)
    return current


def enqueue_next(app_id: int) -> None:
    """Enqueue the oldest QUEUED deployment of the app, if any (after one finished)."""
    queued = (
        Deployment.objects.filter(app_id=app_id, status=Deployment.Status.QUEUED)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)
        .first()
    )
    if queued is not None:
        enqueue(queued)


def request_undeploy(app: App, user: Any = None) -> Deployment:
    """Queue the removal of every version, the frontend and the backends of ``app``."""
    with transaction.atomic():
        app = App.objects.select_for_update().get(pk=app.pk)
        if _pending_undeploy(app) is not None:
            raise AppBusy(f"{app} is already being undeployed.")
        deployment = _create(
            app,
            kind=Deployment.Kind.UNDEPLOY,
            image=app.image,
            user=user,
            trigger=Deployment.Trigger.UI,
            detail="",
            descriptor=app.snapshot(),
            first_line=f"Undeploy of {app} queued by {_who(user)}.",
        )
        record(user, "undeploy", deployment)
        return deployment


def request_swap_back(app: App, user: Any = None) -> Deployment | None:
    """Queue a switch back to the previous, still warm version; None when there is none."""
    with transaction.atomic():
        app = App.objects.select_for_update().get(pk=app.pk)
        if _pending_undeploy(app) is not None:
            raise AppBusy(f"{app} is being undeployed.")
        target = warm_previous_version(app)
        if target is None:
            return None
        deployment = _create(
            app,
            kind=Deployment.Kind.SWAP_BACK,
            image=target[1],
            user=user,
            trigger=Deployment.Trigger.UI,
            detail="",
            descriptor={**app.snapshot(), "image": target[1]},
            version=target[0],
            first_line=f"Swap back of {app} to v{target[0]} queued by {_who(user)}.",
        )
        record(user, "swap_back", deployment, version=target[0])
        return deployment


def scale_app(
    app: App,
    replicas: int,
    user: Any = None,
    *,
    checked_for_deploys: bool = False,
    log: LogFn | None = None,
) -> None:
    """Set the app's replicas and, when it is live, its live version's replicas in the cluster.

    Refused while a deploy of the app is queued or running: it has already taken the
    replica count into its snapshot, so its new version would come up with the old one.
    The scaler, which checks for deploys itself under the same lock, passes
    ``checked_for_deploys``. Pods removed leave the load balancer first
    (deployer.scaledown); ``log(level, message)`` receives what happens to each.
    """
    try:
        validate_replicas(replicas, minimum=0)
    except ValidationError as exc:
        raise InvalidRequest(_messages(exc)) from None
    with transaction.atomic():
        # The per-app lock request_deploy takes: no deploy is created between check and write.
        App.objects.select_for_update().filter(pk=app.pk).first()
        active = None if checked_for_deploys else _active_other(app)
        if active is not None:
            raise AppBusy(
                f"Deployment #{active.pk} of {app} is {active.get_status_display().lower()}; "
                "scale once it has finished, or its new version would start with the old "
                "replica count."
            )
        before = App.objects.filter(pk=app.pk).values_list("replicas", flat=True).first()
        App.objects.filter(pk=app.pk).update(
            replicas=replicas, updated_by=user if getattr(user, "pk", None) else None
        )
        if not checked_for_deploys:
            # The scaler's own runs are recorded as scaling runs, not as a user's action.
            record(user, "scale", app, diff={"replicas": [before, replicas]})
    app.replicas = replicas
    if app.live_version is None:
        return
    grace = termination_grace_seconds(app.stop_delay_seconds, dict(app.extra_pod_spec))

    def log_line(level: str, message: str) -> None:
        logger.log(logging.getLevelName(level.upper()), "scale %s: %s", app, message)
        if log is not None:
            log(level, message)

    try:
        with EtcdStore() as store:
            scale_version(
                KubeCluster(),
                store,
                namespace=app.namespace,
                app=app.name,
                version=app.live_version,
                replicas=replicas,
                grace=grace,
                log=log_line,
            )
    except (KubeError, StoreError) as exc:
        raise DeployError(f"Could not scale {app} in the cluster: {exc}") from exc
    logger.info("scaled %s v%s to %s replicas (by %s)", app, app.live_version, replicas, _who(user))


@contextlib.contextmanager
def pod_rotation() -> Iterator[PodRotation]:
    """Take pods out of (and back into) every load balancer's rotation while the block runs."""
    with EtcdStore() as store:
        yield PodRotation(store)
