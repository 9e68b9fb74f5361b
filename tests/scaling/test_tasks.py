"""The Celery wiring: beat sends the tick every ~30 s; a waiting run is looked at again later."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from celery.beat import Scheduler
from django.conf import settings

from deployer.models import App
from scaling import runner, tasks
from scaling.models import ScalingRun


def test_beat_sends_the_tick_every_thirty_seconds() -> None:
    from dashboard.celery import app

    app.loader.import_default_modules()
    # The entry as beat itself reads it from the configuration.
    scheduler = Scheduler(app, lazy=True)
    scheduler.setup_schedule()
    entry = scheduler.schedule["scaling-tick"]
    assert entry.task == tasks.tick.name == "scaling.tasks.tick" and entry.task in app.tasks
    now = entry.schedule.now()
    just_sent = entry.schedule.is_due(now)
    assert not just_sent.is_due and 29 <= just_sent.next <= 30
    assert not entry.schedule.is_due(now - timedelta(seconds=28)).is_due
    assert entry.schedule.is_due(now - timedelta(seconds=31)).is_due


@pytest.mark.both_databases
@pytest.mark.django_db
def test_a_waiting_run_is_sent_again_after_a_pause(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.CORDON, params={"node": "n1"})
    monkeypatch.setattr(runner, "execute", lambda run_id: runner.Outcome.WAIT)
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        tasks.execute_run, "apply_async", lambda args, countdown: sent.append((args, countdown))
    )
    assert tasks.execute_run(run.pk) == "wait"
    assert sent == [((run.pk,), settings.SCALING_WAIT_SECONDS)]


@pytest.mark.django_db
def test_a_missing_run_is_skipped_quietly() -> None:
    assert tasks.execute_run(987654) == "skipped"
