"""A scaling run's worker beats while it runs, so the tick resumes a lost run within minutes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from deployer.models import App
from scaling import runner, services, tasks
from scaling.models import ScalingRun
from scaling.planner import Change
from scaling.schedule import FrozenClock

pytestmark = pytest.mark.both_databases

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_the_worker_refreshes_a_running_run_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.CORDON, params={"node": "n1"})
    beats: list[datetime] = []

    def cordon(started: ScalingRun, context: object, log: object) -> runner.Outcome:
        first = ScalingRun.objects.get(pk=started.pk).updated_at
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = ScalingRun.objects.get(pk=started.pk).updated_at
            if now > first:
                beats.append(now)
                break
            time.sleep(0.1)  # the heartbeat thread writes on its own
        return runner.Outcome.DONE

    monkeypatch.setitem(runner.HANDLERS, ScalingRun.Kind.CORDON, cordon)

    assert tasks.execute_run(run.pk) == "done"
    assert len(beats) == 1
    run.refresh_from_db()
    assert run.status == ScalingRun.Status.SUCCEEDED


@pytest.mark.django_db
def test_a_worker_whose_run_was_resumed_elsewhere_stops_without_acting_or_finishing_it(
    make_app: Callable[..., App], make_services: Callable, scaler: Callable
) -> None:
    first, second = make_app("first", replicas=4), make_app("second", replicas=4)
    run = services.request_app_scale(first, 2)
    plan = [Change("app", app.pk, app.name, 4, 2, "manual").as_json() for app in (first, second)]
    ScalingRun.objects.filter(pk=run.pk).update(plan=plan)
    resumed: list[ScalingRun] = []
    scale = scaler

    def scale_then_lose_the_run(app: App, replicas: int, log: object = None) -> None:
        scale(app, replicas, log)
        if not resumed:
            # This worker falls silent here; the tick resumes the run and another worker
            # starts it under its own claim.
            ScalingRun.objects.filter(pk=run.pk).update(status=ScalingRun.Status.WAITING)
            other = ScalingRun.objects.get(pk=run.pk)
            other.start()
            resumed.append(other)

    context = make_services(FrozenClock(NOW))
    context.scale_app = scale_then_lose_the_run

    assert runner.execute(run.pk, context) == runner.Outcome.SKIPPED

    run.refresh_from_db()
    # Only the first change was made; the run is the other worker's, still running.
    assert scaler.calls == [("first", 2)]
    assert run.status == ScalingRun.Status.RUNNING
    assert run.claim == resumed[0].claim
    messages = " ".join(run.logs.values_list("message", flat=True))
    assert "This worker lost the run (another worker resumed it); it stops here." in messages
    # The worker that holds the run finishes it: the change already recorded is skipped.
    resumed[0].succeed()
    assert ScalingRun.objects.get(pk=run.pk).status == ScalingRun.Status.SUCCEEDED


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
