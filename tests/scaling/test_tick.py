"""The level-triggered tick: catch-up, idempotence, overlapping schedules, deploys in flight."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from django.db import connection

from deployer.models import App, Deployment
from scaling import runner, services
from scaling.models import AppAction, ScalingRun, Schedule
from scaling.runner import Outcome, RunContext
from scaling.schedule import FrozenClock

pytestmark = pytest.mark.django_db

PERCENT = AppAction.Mode.PERCENT
ABSOLUTE = AppAction.Mode.ABSOLUTE


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def tick_and_run(clock: FrozenClock, make_services: Callable[..., RunContext]) -> list[ScalingRun]:
    runs = services.tick(clock)
    for run in runs:
        runner.execute(run.pk, make_services(clock))
    return runs


def test_it_applies_a_window_after_a_restart_in_the_middle_of_it(
    make_app: Callable[..., App], make_schedule: Callable[..., Schedule], make_services: Callable
) -> None:
    app = make_app(replicas=4)
    make_schedule(
        "nights",
        days=[0, 1, 2, 3, 4],
        at=time(21),
        until=time(7),
        zone="Europe/Amsterdam",
        apps={app: (PERCENT, 50)},
    )
    clock = FrozenClock(at(2026, 6, 15, 17))  # Monday 19:00 in Amsterdam: before the window
    tick_and_run(clock, make_services)
    app.refresh_from_db()
    assert app.replicas == 4
    # The scheduler is down from 19:00 to 23:30 and misses the window's start at 21:00.
    clock.current = at(2026, 6, 15, 21, 30)
    runs = tick_and_run(clock, make_services)
    app.refresh_from_db()
    assert app.replicas == 2 and app.baseline_replicas == 4
    assert [r.due_at for r in runs] == [at(2026, 6, 15, 19)]
    # Further ticks inside the window change nothing and record nothing.
    clock.advance(timedelta(seconds=30))
    assert services.tick(clock) == []
    # Tuesday 07:00 local: the window ends and the app goes back to its baseline.
    clock.current = at(2026, 6, 16, 5, 0, 10)
    tick_and_run(clock, make_services)
    app.refresh_from_db()
    assert app.replicas == 4


def test_the_most_recent_due_time_wins_between_overlapping_schedules(
    make_app: Callable[..., App],
    make_schedule: Callable[..., Schedule],
    make_services: Callable,
    scaler: Callable,
) -> None:
    app = make_app(replicas=6)
    make_schedule("evening", cron="0 21 * * *", apps={app: (PERCENT, 50)})
    make_schedule("morning", cron="0 7 * * *", apps={app: (ABSOLUTE, 6)})
    make_schedule("friday", cron="0 22 * * 5", apps={app: (ABSOLUTE, 1)})
    clock = FrozenClock(at(2026, 6, 11, 21, 0, 5))  # Thursday 21:00 UTC
    runs = tick_and_run(clock, make_services)
    assert [r.schedule.name for r in runs] == ["evening"]
    app.refresh_from_db()
    assert app.replicas == 3
    clock.current = at(2026, 6, 12, 22, 0, 5)  # Friday 22:00: friday beats Friday's 21:00
    runs = tick_and_run(clock, make_services)
    app.refresh_from_db()
    assert app.replicas == 1
    assert ScalingRun.objects.filter(schedule__name="evening").count() == 1
    # Down from Friday night to Saturday 08:00: only the morning's due time is applied.
    clock.current = at(2026, 6, 13, 8)
    runs = tick_and_run(clock, make_services)
    assert [r.schedule.name for r in runs] == ["morning"]
    app.refresh_from_db()
    assert app.replicas == 6


def test_a_percentage_rounds_up_and_respects_the_floor(
    make_app: Callable[..., App], make_schedule: Callable[..., Schedule], make_services: Callable
) -> None:
    small = make_app("small", replicas=3)
    tiny = make_app("tiny", replicas=2)
    make_schedule("night", cron="0 0 * * *", apps={small: (PERCENT, 50), tiny: (PERCENT, 10, 1)})
    tick_and_run(FrozenClock(at(2026, 6, 1, 0, 1)), make_services)
    small.refresh_from_db()
    tiny.refresh_from_db()
    assert (small.replicas, tiny.replicas) == (2, 1)


@pytest.mark.both_databases
def test_it_waits_for_a_running_deploy_and_then_scales(
    make_app: Callable[..., App],
    make_schedule: Callable[..., Schedule],
    make_services: Callable,
    scaler: Callable,
) -> None:
    app = make_app(replicas=4)
    make_schedule("night", cron="0 0 * * *", apps={app: (ABSOLUTE, 2)})
    clock = FrozenClock(at(2026, 6, 1, 0, 1))
    deploying: dict[int, int | None] = {app.pk: 17}
    busy = RunContext(clock=clock, scale_app=scaler, busy_deploy=lambda a: deploying[a.pk])
    (run,) = services.tick(clock)
    assert runner.execute(run.pk, busy) == Outcome.WAIT
    run.refresh_from_db()
    assert run.status == ScalingRun.Status.WAITING
    assert scaler.calls == []
    assert "waiting for deployment #17" in " ".join(run.logs.values_list("message", flat=True))
    deploying[app.pk] = None
    assert runner.execute(run.pk, busy) == Outcome.DONE
    run.refresh_from_db()
    assert run.status == ScalingRun.Status.SUCCEEDED
    assert scaler.calls == [("hello", 2)]


@pytest.mark.both_databases
@pytest.mark.django_db(transaction=True)
def test_a_deploy_requested_while_the_scaler_checks_gets_the_new_replica_count(
    make_app: Callable[..., App],
    make_schedule: Callable[..., Schedule],
    scaler: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A user clicks Deploy right after the scaler saw no deploy running: the deploy must
    # not snapshot the old replica count and bring it back over the schedule's.
    from deployer import services as deploys

    monkeypatch.setattr(deploys, "enqueue", lambda deployment_id: None)
    app = make_app(replicas=4)
    make_schedule("night", cron="0 0 * * *", apps={app: (ABSOLUTE, 2)})
    clock = FrozenClock(at(2026, 6, 1, 0, 1))
    requested: list[int] = []

    def deploy() -> None:
        try:
            requested.append(deploys.request_deploy(App.objects.get(pk=app.pk)).pk)
        finally:
            connection.close()

    user = threading.Thread(target=deploy)

    def no_deploy_yet(checked: App) -> int | None:
        user.start()
        user.join(timeout=0.5)  # it waits for the scaler's transaction, however long
        return None

    (run,) = services.tick(clock)
    racing = RunContext(clock=clock, scale_app=scaler, busy_deploy=no_deploy_yet)
    assert runner.execute(run.pk, racing) == Outcome.DONE
    user.join(timeout=10)
    (deployment,) = Deployment.objects.filter(pk__in=requested)
    assert deployment.descriptor["replicas"] == 2


@pytest.mark.both_databases
def test_a_second_tick_for_the_same_due_time_records_nothing(
    make_app: Callable[..., App], make_schedule: Callable[..., Schedule]
) -> None:
    app = make_app()
    make_schedule("night", cron="*/15 * * * *", apps={app: (ABSOLUTE, 2)})
    clock = FrozenClock(at(2026, 6, 1, 0, 16))
    assert len(services.tick(clock)) == 1
    assert services.tick(clock) == []
    clock.advance(timedelta(minutes=15))
    assert len(services.tick(clock)) == 1


def test_a_disabled_schedule_does_nothing(
    make_app: Callable[..., App], make_schedule: Callable[..., Schedule]
) -> None:
    app = make_app()
    schedule = make_schedule("night", cron="0 0 * * *", apps={app: (ABSOLUTE, 2)})
    Schedule.objects.filter(pk=schedule.pk).update(enabled=False)
    assert services.tick(FrozenClock(at(2026, 6, 1, 0, 1))) == []


def test_a_dry_run_logs_the_changes_and_makes_none(
    make_app: Callable[..., App],
    make_schedule: Callable[..., Schedule],
    make_services: Callable,
    scaler: Callable,
) -> None:
    app = make_app(replicas=4)
    schedule = make_schedule("night", cron="0 0 * * *", apps={app: (PERCENT, 25)})
    clock = FrozenClock(at(2026, 6, 1, 12))
    run = services.request_dry_run(schedule, clock=clock)
    assert runner.execute(run.pk, make_services(clock)) == Outcome.DONE
    lines = list(run.logs.values_list("message", flat=True))
    assert any("would scale 4 → 1 replicas" in line for line in lines)
    assert scaler.calls == []
    app.refresh_from_db()
    assert app.replicas == 4 and app.baseline_replicas is None


@pytest.mark.both_databases
def test_a_run_waits_for_an_older_run_that_changes_the_same_target(
    make_app: Callable[..., App], make_services: Callable, scaler: Callable
) -> None:
    app = make_app(replicas=4)
    older = services.request_app_scale(app, 3)
    ScalingRun.objects.filter(pk=older.pk).update(status=ScalingRun.Status.RUNNING)
    newer = services.request_app_scale(app, 1)
    clock = FrozenClock(at(2026, 6, 1, 12))
    assert runner.execute(newer.pk, make_services(clock)) == Outcome.WAIT
    assert f"waiting for scaling run #{older.pk}" in " ".join(
        newer.logs.values_list("message", flat=True)
    )
    ScalingRun.objects.filter(pk=older.pk).update(status=ScalingRun.Status.SUCCEEDED)
    assert runner.execute(newer.pk, make_services(clock)) == Outcome.DONE
    assert scaler.calls == [("hello", 1)]


@pytest.mark.both_databases
def test_a_run_whose_worker_was_lost_is_resumed_by_the_tick(
    make_app: Callable[..., App], make_services: Callable, scaler: Callable
) -> None:
    app = make_app(replicas=4)
    run = services.request_app_scale(app, 2)
    long_ago = at(2026, 6, 1, 11)
    ScalingRun.objects.filter(pk=run.pk).update(
        status=ScalingRun.Status.RUNNING, started_at=long_ago, updated_at=long_ago
    )
    clock = FrozenClock(at(2026, 6, 1, 12))
    services.tick(clock)
    run.refresh_from_db()
    assert run.status == ScalingRun.Status.WAITING
    assert runner.execute(run.pk, make_services(clock)) == Outcome.DONE
    assert scaler.calls == [("hello", 2)]
    assert "worker running this run was lost" in " ".join(
        run.logs.values_list("message", flat=True)
    )


@pytest.mark.both_databases
def test_a_recently_active_run_is_left_alone(make_app: Callable[..., App]) -> None:
    run = services.request_app_scale(make_app(), 2)
    now = at(2026, 6, 1, 12)
    ScalingRun.objects.filter(pk=run.pk).update(
        status=ScalingRun.Status.RUNNING, updated_at=now - timedelta(minutes=1)
    )
    services.tick(FrozenClock(now))
    run.refresh_from_db()
    assert run.status == ScalingRun.Status.RUNNING


@pytest.mark.both_databases
def test_a_queued_run_whose_message_was_lost_is_resent_once_per_interval(
    make_app: Callable[..., App],
    django_capture_on_commit_callbacks: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scaling import tasks

    run = services.request_app_scale(make_app(), 2)
    now = at(2026, 6, 1, 12)
    ScalingRun.objects.filter(pk=run.pk).update(updated_at=now - timedelta(minutes=5))
    sent: list[int] = []
    monkeypatch.setattr(tasks.execute_run, "delay", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        services.tick(FrozenClock(now))
    with django_capture_on_commit_callbacks(execute=True):
        services.tick(FrozenClock(now + timedelta(seconds=30)))
    assert sent == [run.pk]


def test_editing_a_schedule_applies_its_latest_due_time_again_as_edited(
    make_app: Callable[..., App], make_schedule: Callable[..., Schedule], make_services: Callable
) -> None:
    app = make_app(replicas=4)
    schedule = make_schedule("nights", cron="0 21 * * *", apps={app: (PERCENT, 50)})
    clock = FrozenClock(at(2026, 6, 1, 21, 1))
    tick_and_run(clock, make_services)
    app.refresh_from_db()
    assert app.replicas == 2
    # The editor bumps the revision; an unchanged schedule is not applied twice.
    clock.advance(timedelta(minutes=30))
    assert services.tick(clock) == []
    AppAction.objects.filter(schedule=schedule).update(value=25)
    Schedule.objects.filter(pk=schedule.pk).update(revision=2)
    runs = tick_and_run(clock, make_services)
    assert [(r.due_at, r.revision) for r in runs] == [(at(2026, 6, 1, 21), 2)]
    app.refresh_from_db()
    assert app.replicas == 1


def test_percentages_stay_relative_to_the_remembered_baseline(
    make_app: Callable[..., App], make_schedule: Callable[..., Schedule], make_services: Callable
) -> None:
    app = make_app(replicas=5)
    make_schedule("evening", cron="0 21 * * *", apps={app: (PERCENT, 40)})
    make_schedule("morning", cron="0 7 * * *", apps={app: (PERCENT, 100)})
    clock = FrozenClock(at(2026, 6, 1, 21, 1))
    tick_and_run(clock, make_services)
    app.refresh_from_db()
    assert (app.replicas, app.baseline_replicas) == (2, 5)
    clock.current = at(2026, 6, 2, 7, 1)
    tick_and_run(clock, make_services)
    app.refresh_from_db()
    assert (app.replicas, app.baseline_replicas) == (5, 5)  # 100% of 5, not of 2


def test_a_broken_schedule_row_does_not_stop_the_others(
    make_app: Callable[..., App], make_schedule: Callable[..., Schedule]
) -> None:
    app = make_app()
    broken = make_schedule("broken", cron="0 0 * * *", apps={app: (ABSOLUTE, 1)})
    Schedule.objects.filter(pk=broken.pk).update(timezone="Mars/Base")
    other = make_app("other")
    make_schedule("fine", cron="0 0 * * *", apps={other: (ABSOLUTE, 1)})
    runs = services.tick(FrozenClock(at(2026, 6, 1, 0, 1)))
    assert [r.schedule.name for r in runs] == ["fine"]


def test_a_scale_in_cordons_all_its_victims_first_and_frees_them_on_failure(
    fake_nodes: Any,
) -> None:
    from deployer.pods import PodInfo
    from scaling.kube import LOCAL_GROUP_LABEL
    from scaling.models import NodeGroup
    from scaling.providers.local import LocalProvider

    for name in ("g-1", "g-2", "g-3"):
        fake_nodes.add(name, {LOCAL_GROUP_LABEL: "g"}, provider_id=f"localcluster:///g/i-{name}")
        # A pod no controller owns: the drain refuses it without force.
        fake_nodes.pods[name] = [
            PodInfo(namespace="default", name=f"bare-{name}", uid=name, node=name, phase="Running")
        ]
    group = NodeGroup.objects.create(name="g", provider="local", min_size=0, max_size=3, desired=3)
    run = services.request_capacity(group, 1)
    svc = RunContext(ops_factory=lambda: fake_nodes, provider=lambda g, ops: LocalProvider(ops))
    assert runner.execute(run.pk, svc) == Outcome.DONE
    run.refresh_from_db()
    assert run.status == ScalingRun.Status.FAILED
    assert "no controller would replace" in run.failure_reason
    assert fake_nodes.calls[:2] == [("cordon", "g-1"), ("cordon", "g-2")]
    assert not any(n.unschedulable for n in fake_nodes.nodes.values())
    assert len(fake_nodes.nodes) == 3
