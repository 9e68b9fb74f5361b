"""A scaling run's worker beats while it runs, so the tick resumes a lost run within minutes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from deployer.models import App
from scaling import runner, services, tasks
from scaling.models import ScalingRun
from scaling.schedule import FrozenClock

pytestmark = pytest.mark.both_databases

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_the_worker_refreshes_a_running_run_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.CORDON, params={"node": "n1"})
    beats: list[datetime] = []

    def execute(run_id: int) -> runner.Outcome:
        started = ScalingRun.objects.get(pk=run_id)
        started.start()
        first = ScalingRun.objects.get(pk=run_id).updated_at
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = ScalingRun.objects.get(pk=run_id).updated_at
            if now > first:
                beats.append(now)
                break
            time.sleep(0.1)  # the heartbeat thread writes on its own
        started.succeed()
        return runner.Outcome.DONE

    monkeypatch.setattr(runner, "execute", execute)

    assert tasks.execute_run(run.pk) == "done"
    assert len(beats) == 1


@pytest.mark.django_db
def test_a_running_run_silent_for_two_minutes_is_resumed_by_the_tick(
    make_app: Callable[..., App],
) -> None:
    lost = services.request_app_scale(make_app("lost"), 2)
    beating = services.request_app_scale(make_app("beating"), 3)
    ScalingRun.objects.filter(pk=lost.pk).update(
        status=ScalingRun.Status.RUNNING, started_at=NOW, updated_at=NOW - timedelta(minutes=2)
    )
    ScalingRun.objects.filter(pk=beating.pk).update(
        status=ScalingRun.Status.RUNNING, started_at=NOW, updated_at=NOW - timedelta(seconds=2)
    )

    services.tick(FrozenClock(NOW))

    lost.refresh_from_db()
    beating.refresh_from_db()
    assert (lost.status, beating.status) == (ScalingRun.Status.WAITING, ScalingRun.Status.RUNNING)
    assert "worker running this run was lost" in " ".join(
        lost.logs.values_list("message", flat=True)
    )
