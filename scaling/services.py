"""What the tick, the pages and the API call: plan, record a run, enqueue it after commit."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from dashboard.audit.service import record
from deployer import taskqueue
from deployer.models import App
from deployer.validation import is_object_name
from scaling import logsink
from scaling.models import NodeGroup, ScalingRun, Schedule
from scaling.planner import Change, changes_for, enabled_schedules, resolve, spec_of
from scaling.schedule import Clock, Event, InvalidSpec, SystemClock, latest_due

logger = logging.getLogger(__name__)

# A queued or waiting run unchanged for this long lost its task message; the tick resends it.
STALE_AFTER = timedelta(minutes=2)
# A running run's worker refreshes its updated_at every few seconds (scaling.tasks); one
# unchanged this long, with no log line either, lost its worker.
LOST_AFTER = timedelta(seconds=90)


class InvalidNode(ValueError):
    """A node action named something that cannot be a node."""


def enqueue(run_id: int) -> None:
    """Send the execute task for ``run_id`` once the current transaction commits."""

    def send() -> None:
        try:
            taskqueue.send(taskqueue.EXECUTE_SCALING_RUN, run_id)
        except Exception:
            logger.exception("could not enqueue scaling run #%s; the next tick retries", run_id)

    transaction.on_commit(send)


def _user(user: Any) -> Any:
    return user if getattr(user, "pk", None) else None


def tick(clock: Clock | None = None) -> list[ScalingRun]:
    """Create (once) and enqueue a run for each schedule due time that holds now."""
    now = (clock or SystemClock()).now()
    created: list[ScalingRun] = []
    for winner in resolve(enabled_schedules(), now):
        schedule, due = winner.schedule, winner.due
        if ScalingRun.objects.filter(
            kind=ScalingRun.Kind.SCHEDULE,
            schedule=schedule,
            due_at=due.at,
            revision=schedule.revision,
        ).exists():
            continue
        plan = [c.as_json() for c in changes_for(schedule, due.event, only=set(winner.targets))]
        try:
            with transaction.atomic():
                run = ScalingRun.objects.create(
                    kind=ScalingRun.Kind.SCHEDULE,
                    schedule=schedule,
                    due_at=due.at,
                    revision=schedule.revision,
                    event=str(due.event),
                    plan=plan,
                    params={"due_local": due.local.isoformat(), "note": due.note},
                    created_at=now,
                    updated_at=now,
                )
                enqueue(run.pk)
        except IntegrityError:
            continue  # a concurrent tick recorded this due time first
        created.append(run)
    requeue_stale(now)
    return created


def requeue_stale(now: datetime) -> None:
    """Enqueue runs whose task was lost (broker outage, worker restart) and resume lost runs."""
    stale = ScalingRun.objects.filter(
        status__in=(ScalingRun.Status.QUEUED, ScalingRun.Status.WAITING),
        updated_at__lt=now - STALE_AFTER,
    )
    stale_ids = list(stale.values_list("pk", flat=True))
    # Touch them so that each is resent once per STALE_AFTER, not at every tick.
    ScalingRun.objects.filter(pk__in=stale_ids).update(updated_at=now)
    for run_id in stale_ids:
        enqueue(run_id)
    lost_before = now - LOST_AFTER
    for run in ScalingRun.objects.filter(
        status=ScalingRun.Status.RUNNING, updated_at__lt=lost_before
    ):
        last_line = run.logs.aggregate(last=Max("time"))["last"]
        if last_line is not None and last_line >= lost_before:
            continue  # still writing its log: alive
        # A worker that died mid-run: hand the run to another; finished changes are skipped.
        resumed = ScalingRun.objects.filter(
            pk=run.pk, status=ScalingRun.Status.RUNNING, updated_at=run.updated_at
        ).update(status=ScalingRun.Status.WAITING, updated_at=now)
        if resumed:
            logsink.append(
                run.pk, "the worker running this run was lost; resuming", level="warning"
            )
            enqueue(run.pk)


def request_dry_run(schedule: Schedule, user: Any = None, clock: Clock | None = None) -> ScalingRun:
    """A run that logs what ``schedule``'s actions would change if it fired now, changing nothing."""
    now = (clock or SystemClock()).now()
    try:
        due = latest_due(spec_of(schedule), now)
    except InvalidSpec:
        due = None  # the dry run still shows what the actions would change
    event = Event.APPLY
    plan = [c.as_json() for c in changes_for(schedule, event)]
    with transaction.atomic():
        run = ScalingRun.objects.create(
            kind=ScalingRun.Kind.DRY_RUN,
            schedule=schedule,
            event=str(event),
            plan=plan,
            params={
                "latest_due": due.at.isoformat() if due else None,
                "latest_event": str(due.event) if due else None,
            },
            triggered_by=_user(user),
        )
        enqueue(run.pk)
    return run


def _manual(kind: str, params: dict[str, Any], user: Any, plan: list[Change]) -> ScalingRun:
    with transaction.atomic():
        run = ScalingRun.objects.create(
            kind=kind,
            params=params,
            plan=[c.as_json() for c in plan],
            triggered_by=_user(user),
        )
        enqueue(run.pk)
    return run


def request_app_scale(
    app: App, replicas: int, user: Any = None, baseline: bool = False
) -> ScalingRun:
    """A manual run that sets ``app`` to ``replicas`` (and its baseline when asked)."""
    params = {"app_id": app.pk, "app": app.name, "replicas": replicas, "baseline": baseline}
    change = Change("app", app.pk, app.name, app.replicas, replicas, "manual")
    run = _manual(ScalingRun.Kind.SCALE_APP, params, user, [change])
    record(
        user, "scale", app, {"replicas": [app.replicas, replicas]}, run=run.pk, baseline=baseline
    )
    return run


def request_capacity(group: NodeGroup, desired: int, user: Any = None) -> ScalingRun:
    """A manual run that brings ``group`` to ``desired`` nodes."""
    params = {"group_id": group.pk, "group": group.name, "desired": desired}
    change = Change("node_group", group.pk, group.name, group.desired, desired, "manual")
    run = _manual(ScalingRun.Kind.SET_CAPACITY, params, user, [change])
    record(user, "node_group.capacity", group, {"desired": [group.desired, desired]}, run=run.pk)
    return run


def request_node_action(
    kind: str, node: str, user: Any = None, force: bool = False, deadline: int | None = None
) -> ScalingRun:
    """A manual cordon, uncordon or drain of ``node``; InvalidNode for a name no node can have."""
    if kind not in (ScalingRun.Kind.CORDON, ScalingRun.Kind.UNCORDON, ScalingRun.Kind.DRAIN):
        raise ValueError(f"not a node action: {kind}")
    if not is_object_name(node):
        raise InvalidNode(
            f"{node[:80]!r} is not a node name: nodes are named with lowercase letters, "
            "digits, '-' and '.' (at most 253 characters)."
        )
    params: dict[str, Any] = {"node": node}
    if kind == ScalingRun.Kind.DRAIN:
        params.update(force=force, deadline=deadline)
    run = _manual(kind, params, user, [])
    record(user, "node.action", f"node {node}", run=run.pk, verb=str(kind), **params)
    return run
