"""A running deployment's heartbeat, the periodic recovery of lost runs and of unsent queues."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from celery.beat import Scheduler
from django.utils import timezone

from dashboard.settings import _database
from deployer import runner, services, tasks
from deployer.heartbeat import (
    BEAT_SECONDS,
    INCARNATION,
    LOST_AFTER,
    Heartbeat,
    hostname_of,
    stale_deployments,
    take_over,
    worker_id,
)
from deployer.models import App, Deployment, DeploymentLog

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Tasks sent to the broker, by name and arguments."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    monkeypatch.setattr(
        services.taskqueue, "send", lambda name, *args, **_kw: calls.append((name, args))
    )
    monkeypatch.setattr(
        tasks.recover_deployment,
        "delay",
        lambda *args: calls.append((tasks.recover_deployment.name, args)),
    )
    return calls


def running(app: App, worker: str, beat_age: float) -> Deployment:
    """A RUNNING deployment of ``app`` on ``worker`` whose last heartbeat is ``beat_age`` s old."""
    deployment = Deployment.objects.create(app=app, image=app.image, descriptor=app.snapshot())
    deployment.start(worker=worker)
    Deployment.objects.filter(pk=deployment.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=beat_age)
    )
    return deployment


def test_it_finds_running_deployments_whose_worker_stopped_beating(
    make_app: Callable[..., App],
) -> None:
    lost = running(make_app(), "worker-a@host", beat_age=60)
    running(make_app(), "worker-b@host", beat_age=1)

    assert stale_deployments() == [(lost.pk, "worker-a@host")]


def test_a_claim_starts_the_heartbeat(make_app: Callable[..., App]) -> None:
    app = make_app()
    deployment = services.request_deploy(app)

    claimed = runner.claim(deployment.pk, "worker-a@host")

    assert claimed is not None and claimed.heartbeat_at is not None
    assert stale_deployments() == []


def test_another_worker_takes_over_only_a_stale_run(make_app: Callable[..., App]) -> None:
    fresh = running(make_app(), "worker-a@host", beat_age=1)
    stale = running(make_app(), "worker-b@host", beat_age=60)

    assert not take_over(fresh.pk, "worker-a@host", "worker-c@host")
    assert take_over(stale.pk, "worker-b@host", "worker-c@host")
    # Taken: a second recovery of the same run (sent twice) finds it is no longer b's.
    assert not take_over(stale.pk, "worker-b@host", "worker-d@host")
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.worker, fresh.worker) == ("worker-c@host", "worker-a@host")
    assert stale.heartbeat_at is not None
    assert stale.heartbeat_at > timezone.now() - timedelta(seconds=5)


def test_a_restarted_worker_takes_back_its_predecessors_run_at_once(
    make_app: Callable[..., App],
) -> None:
    mine = running(make_app(), "worker-a@host#0000aaaa", beat_age=1)

    assert take_over(mine.pk, "worker-a@host#0000aaaa", "worker-a@host#1111bbbb")
    mine.refresh_from_db()
    assert mine.worker == "worker-a@host#1111bbbb"


@pytest.mark.parametrize("beat_age", [1, 600])
def test_a_worker_never_takes_over_a_run_of_its_own_incarnation(
    make_app: Callable[..., App], beat_age: float
) -> None:
    # Another thread of the same process runs it, however late its heartbeat.
    live = running(make_app(), "worker-a@host#0000aaaa", beat_age=beat_age)

    assert not take_over(live.pk, "worker-a@host#0000aaaa", "worker-a@host#0000aaaa")
    live.refresh_from_db()
    assert live.worker == "worker-a@host#0000aaaa"


def test_a_process_records_its_hostname_and_incarnation() -> None:
    me = worker_id("worker-a@host")

    assert me == f"worker-a@host#{INCARNATION}"
    assert hostname_of(me) == "worker-a@host"
    assert hostname_of("worker-a@host") == "worker-a@host"
    assert len(INCARNATION) >= 8


def test_a_worker_start_recovers_an_earlier_incarnation_but_not_its_own_or_a_live_one(
    make_app: Callable[..., App],
) -> None:
    earlier = running(make_app(), "worker-a@host#0000aaaa", beat_age=1)
    running(make_app(), "worker-a@host#1111bbbb", beat_age=1)
    running(make_app(), "worker-b@host#2222cccc", beat_age=1)
    gone = running(make_app(), "worker-c@host#3333dddd", beat_age=1)
    pinged: list[str] = []

    def alive(hostname: str) -> bool:
        pinged.append(hostname)
        return hostname == "worker-b@host"

    lost = runner.lost_deployments("worker-a@host#1111bbbb", alive)

    assert sorted(lost) == [
        (earlier.pk, "worker-a@host#0000aaaa"),
        (gone.pk, "worker-c@host#3333dddd"),
    ]
    assert sorted(pinged) == ["worker-b@host", "worker-c@host"]


def test_a_heartbeat_delayed_by_the_sqlite_busy_timeout_does_not_look_lost() -> None:
    # The busy timeout of the SQLite file the processes of the stack share.
    options = _database(None)["OPTIONS"]
    assert isinstance(options, dict)
    busy = timedelta(seconds=float(options["timeout"]))

    assert 2 * (busy + timedelta(seconds=BEAT_SECONDS)) < LOST_AFTER


def test_a_finished_run_is_never_taken_over(make_app: Callable[..., App]) -> None:
    done = running(make_app(), "worker-a@host", beat_age=60)
    done.succeed()

    assert stale_deployments() == []
    assert not take_over(done.pk, "worker-a@host", "worker-c@host")


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_refreshes_while_the_block_runs_and_stops_after(
    make_app: Callable[..., App],
) -> None:
    deployment = running(make_app(), "worker-a@host", beat_age=60)

    with Heartbeat(deployment.pk, "worker-a@host", every=0.05):
        deadline = time.monotonic() + 10
        while stale_deployments() and time.monotonic() < deadline:
            time.sleep(0.05)  # the beat thread writes on its own
        assert stale_deployments() == []
    deployment.refresh_from_db()
    after = deployment.heartbeat_at
    time.sleep(0.2)
    deployment.refresh_from_db()
    assert deployment.heartbeat_at == after


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_stops_for_a_run_another_worker_took_over(
    make_app: Callable[..., App],
) -> None:
    deployment = running(make_app(), "worker-a@host", beat_age=60)
    assert take_over(deployment.pk, "worker-a@host", "worker-b@host")
    taken_at = Deployment.objects.get(pk=deployment.pk).heartbeat_at

    beat = Heartbeat(deployment.pk, "worker-a@host", every=0.05)
    with beat:
        beat._thread.join(timeout=10)
        assert not beat._thread.is_alive()
    assert Deployment.objects.get(pk=deployment.pk).heartbeat_at == taken_at


def test_the_periodic_recovery_hands_lost_runs_to_a_worker(
    make_app: Callable[..., App], sent: list[tuple[str, tuple[Any, ...]]]
) -> None:
    lost = running(make_app(), "worker-a@host", beat_age=60)
    running(make_app(), "worker-b@host", beat_age=1)

    tasks.recover_lost()

    assert sent == [("deployer.recover_deployment", (lost.pk, "worker-a@host"))]


def test_the_periodic_recovery_sends_a_queued_deployment_whose_send_failed(
    make_app: Callable[..., App],
    sent: list[tuple[str, tuple[Any, ...]]],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    def broker_down(name: str, *args: Any, **_kw: Any) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(services.taskqueue, "send", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        deployment = services.request_deploy(make_app())

    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.QUEUED and deployment.enqueued_at is None
    last = DeploymentLog.objects.filter(deployment=deployment).last()
    assert last is not None and last.level == "warning"
    assert "task queue did not answer (ConnectionError)" in last.message
    assert "starts once the queue is back" in last.message

    monkeypatch.undo()
    monkeypatch.setattr(
        services.taskqueue, "send", lambda name, *args, **_kw: sent.append((name, args))
    )
    tasks.recover_lost()

    assert sent == [("deployer.run_deployment", (deployment.pk,))]
    deployment.refresh_from_db()
    assert deployment.enqueued_at is not None


def test_the_periodic_recovery_leaves_a_recently_sent_deployment_to_its_message(
    make_app: Callable[..., App],
    sent: list[tuple[str, tuple[Any, ...]]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        deployment = services.request_deploy(make_app())
    assert sent == [("deployer.run_deployment", (deployment.pk,))]

    tasks.recover_lost()
    assert len(sent) == 1

    # A broker restarted without its queue lost the message: sent again after a while.
    Deployment.objects.filter(pk=deployment.pk).update(
        enqueued_at=timezone.now() - tasks.REDRIVE_AFTER - timedelta(seconds=1)
    )
    tasks.recover_lost()
    assert sent[1:] == [("deployer.run_deployment", (deployment.pk,))]


def test_beat_sends_the_recovery_every_five_seconds() -> None:
    from dashboard.celery import app

    app.loader.import_default_modules()
    scheduler = Scheduler(app, lazy=True)
    scheduler.setup_schedule()
    entry = scheduler.schedule["deployer-recover-lost"]
    assert entry.task == tasks.recover_lost.name == "deployer.recover_lost"
    assert entry.task in app.tasks
    now = entry.schedule.now()
    assert not entry.schedule.is_due(now - timedelta(seconds=4)).is_due
    assert entry.schedule.is_due(now - timedelta(seconds=6)).is_due
