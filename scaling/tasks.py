"""Celery tasks of scaling: thin wrappers that call scaling.services and scaling.runner."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from deployer.heartbeat import RowHeartbeat
from scaling import runner, services
from scaling.models import ScalingRun


@shared_task(name="scaling.tasks.tick", ignore_result=True)
def tick() -> list[int]:
    """Every ~30 s (celery beat): record and enqueue the schedule due times that hold now."""
    return [run.pk for run in services.tick()]


@shared_task(name="scaling.tasks.execute_run", ignore_result=True)
def execute_run(run_id: int) -> str:
    """Carry out scaling run ``run_id``; look again later while it waits for a deploy."""
    running = ScalingRun.objects.filter(pk=run_id, status=ScalingRun.Status.RUNNING)
    # The run's updated_at is its heartbeat: scaling.services.requeue_stale resumes a run
    # whose worker stopped beating.
    with RowHeartbeat(running, "updated_at"):
        outcome = runner.execute(run_id)
    if outcome == runner.Outcome.WAIT:
        execute_run.apply_async((run_id,), countdown=settings.SCALING_WAIT_SECONDS)
    return str(outcome)
