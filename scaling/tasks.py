"""Celery tasks of scaling: thin wrappers that call scaling.services and scaling.runner."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from scaling import runner, services


@shared_task(name="scaling.tasks.tick", ignore_result=True)
def tick() -> list[int]:
    """Every ~30 s (celery beat): record and enqueue the schedule due times that hold now."""
    return [run.pk for run in services.tick()]


@shared_task(name="scaling.tasks.execute_run", ignore_result=True)
def execute_run(run_id: int) -> str:
    """Carry out scaling run ``run_id``; look again later while it waits for a deploy."""
    outcome = runner.execute(run_id)  # beats the run's heartbeat while it holds the run
    if outcome == runner.Outcome.WAIT:
        execute_run.apply_async((run_id,), countdown=settings.SCALING_WAIT_SECONDS)
    return str(outcome)
