"""Ticks and workers at once: one run per due time, and one worker carries each run out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from deployer import logsink
from deployer.models import App
from scaling import runner, services
from scaling.models import AppAction, ScalingRun, Schedule
from scaling.runner import Outcome, RunContext
from scaling.schedule import FrozenClock
from tests.concurrent import at_once
from tests.scaling.conftest import FakeScaler

pytestmark = [pytest.mark.both_databases, pytest.mark.django_db(transaction=True)]

WRITERS = 4


@pytest.fixture(autouse=True)
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Run ids sent to Celery, and nothing published to Channels."""
    sent: list[int] = []
    monkeypatch.setattr(services, "enqueue", sent.append)
    monkeypatch.setattr(logsink, "publish", lambda group, message: None)
    return sent


def test_ticks_at_once_record_one_run_for_a_due_time(
    make_app: Callable[..., App], make_schedule: Callable[..., Schedule], enqueued: list[int]
) -> None:
    app = make_app()
    make_schedule("night", cron="*/15 * * * *", apps={app: (AppAction.Mode.ABSOLUTE, 3)})
    clock = FrozenClock(datetime(2026, 6, 1, 0, 16, tzinfo=UTC))

    results = at_once([lambda: services.tick(clock) for _ in range(WRITERS)])

    assert not [r for r in results if isinstance(r, BaseException)], results
    created = [run for runs in results for run in runs]  # type: ignore[union-attr]
    assert len(created) == 1
    assert list(ScalingRun.objects.values_list("pk", flat=True)) == [created[0].pk]
    assert enqueued == [created[0].pk]


def test_workers_at_once_carry_a_run_out_once(
    make_app: Callable[..., App],
    make_services: Callable[[FrozenClock], RunContext],
    scaler: FakeScaler,
) -> None:
    app = make_app(replicas=2)
    run = services.request_app_scale(app, 5)
    clock = FrozenClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))

    outcomes = at_once(
        [lambda: runner.execute(run.pk, make_services(clock)) for _ in range(WRITERS)]
    )

    assert sorted(outcomes, key=str) == sorted(
        [Outcome.DONE] + [Outcome.SKIPPED] * (WRITERS - 1), key=str
    )
    assert scaler.calls == [(app.name, 5)]
    run.refresh_from_db()
    assert run.status == ScalingRun.Status.SUCCEEDED
