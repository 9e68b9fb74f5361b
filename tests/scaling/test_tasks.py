"""The Celery wiring: beat sends the tick every ~30 s; a waiting run is looked at again later."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings

from deployer.models import App
from scaling import runner, tasks
from scaling.models import ScalingRun


def test_beat_sends_the_tick_every_thirty_seconds() -> None:
    from dashboard.celery import app

    app.loader.import_default_modules()
    entry = settings.CELERY_BEAT_SCHEDULE["scaling-tick"]
    assert entry["task"] == "scaling.tasks.tick" and entry["task"] in app.tasks
    assert entry["schedule"] == 30.0


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
