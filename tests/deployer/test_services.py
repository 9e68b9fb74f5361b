"""The service functions the dashboard, API, webhooks and scaling call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from deployer import logsink, runner, services
from deployer.errors import AppBusy, InvalidRequest, NothingToDo
from deployer.models import App, Deployment, DeploymentLog
from deployer.status import app_status

pytestmark = pytest.mark.both_databases


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Deployment ids sent to Celery (after commit)."""
    sent: list[int] = []
    monkeypatch.setattr(services, "enqueue", sent.append)
    return sent


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Channels messages published (after commit)."""
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(logsink, "publish", lambda group, message: sent.append((group, message)))
    return sent


@pytest.fixture
def user(db: None) -> User:
    return User.objects.create_user("dev", password="x")


def test_it_queues_a_deploy_and_enqueues_it_after_commit(
    app: App,
    user: User,
    enqueued: list[int],
    published: list[tuple[str, dict[str, Any]]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        deployment = services.request_deploy(app, user=user, image="demo/hello:2")

    assert deployment.status == Deployment.Status.QUEUED
    assert deployment.image == deployment.descriptor["image"] == "demo/hello:2"
    assert deployment.triggered_by == user
    assert enqueued == [deployment.pk]
    groups = {group for group, _ in published}
    assert groups == {f"deployment-{deployment.pk}"}
    line = next(m for _, m in published if m["type"] == "deployment.log")
    assert line["line"]["seq"] == 1 and "queued by dev" in line["line"]["message"]
    status = next(m for _, m in published if m["type"] == "deployment.status")
    assert status["status"] == "queued"


def test_it_publishes_nothing_before_commit(
    app: App, published: list[tuple[str, dict[str, Any]]], enqueued: list[int]
) -> None:
    with pytest.raises(RuntimeError), __import__("django.db").db.transaction.atomic():
        services.request_deploy(app)
        raise RuntimeError("rolled back")

    assert published == [] and enqueued == []
    assert Deployment.objects.count() == 0


def test_it_refuses_an_invalid_image(app: App, enqueued: list[int]) -> None:
    with pytest.raises(InvalidRequest, match="image reference"):
        services.request_deploy(app, image="HTTP://nope")
    assert Deployment.objects.count() == 0


def test_it_refuses_to_deploy_while_undeploying(app: App, enqueued: list[int]) -> None:
    services.request_undeploy(app)
    with pytest.raises(AppBusy, match="being undeployed"):
        services.request_deploy(app)


def test_a_second_deploy_waits_for_the_first_and_says_so(app: App, enqueued: list[int]) -> None:
    first = services.request_deploy(app)
    second = services.request_deploy(app, image="demo/hello:2")

    assert runner.claim(first.pk, "w1") is not None
    assert runner.claim(second.pk, "w1") is None
    second.refresh_from_db()
    assert second.status == Deployment.Status.QUEUED
    messages = list(second.logs.values_list("message", flat=True))
    assert any(f"Waiting for deployment #{first.pk}" in m for m in messages)


def test_abort_of_a_queued_deployment_takes_effect_at_once(
    app: App, user: User, enqueued: list[int]
) -> None:
    deployment = services.request_deploy(app)

    services.request_abort(deployment, user=user)

    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.ABORTED
    assert "aborted by dev" in deployment.failure_reason
    with pytest.raises(NothingToDo):
        services.request_abort(deployment)


def test_abort_of_a_running_deployment_is_requested(app: App, enqueued: list[int]) -> None:
    deployment = services.request_deploy(app)
    runner.claim(deployment.pk, "w1")

    services.request_abort(deployment)

    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.RUNNING
    assert deployment.abort_requested


def test_it_refuses_to_scale_over_the_cap(app: App) -> None:
    with pytest.raises(InvalidRequest, match="between 0 and 100"):
        services.scale_app(app, 101)
    with pytest.raises(InvalidRequest):
        services.scale_app(app, -1)


def test_scaling_an_app_that_is_not_live_only_changes_the_descriptor(app: App) -> None:
    services.scale_app(app, 5)
    app.refresh_from_db()
    assert app.replicas == 5


def test_log_lines_get_increasing_sequence_numbers(
    app: App, published: list[tuple[str, dict[str, Any]]], enqueued: list[int]
) -> None:
    deployment = services.request_deploy(app)
    for i in range(3):
        logsink.append(deployment, f"line {i}")

    seqs = list(DeploymentLog.objects.filter(deployment=deployment).values_list("seq", flat=True))
    assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))


def test_app_status_reports_an_unreachable_cluster_per_app(
    make_app: Callable[..., App], settings: Any, tmp_path: Any
) -> None:
    from deployer import k8s

    missing = tmp_path / "kubeconfig"
    missing.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    settings.KUBECONFIG = missing
    k8s.reset()
    apps = [make_app(), make_app()]

    status = app_status(apps)

    assert set(status) == {a.pk for a in apps}
    assert all("cluster unreachable" in s["error"] for s in status.values())


def test_a_worker_start_recovers_deployments_of_a_lost_worker_and_restarts_queues(
    make_app: Callable[..., App], enqueued: list[int]
) -> None:
    lost_app, waiting_app = make_app(), make_app()
    running = services.request_deploy(lost_app)
    runner.claim(running.pk, "worker-a@host")
    alive = services.request_deploy(make_app())
    runner.claim(alive.pk, "worker-b@host")
    queued = services.request_deploy(waiting_app)

    lost = runner.lost_deployments("worker-c@host", alive=lambda name: name == "worker-b@host")

    assert lost == [(running.pk, "worker-a@host")]
    assert runner.stalled_queues() == [waiting_app.pk]
    assert queued.status == Deployment.Status.QUEUED
