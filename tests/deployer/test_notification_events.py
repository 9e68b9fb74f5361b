"""What the deployer announces (deployer.events): queued, started, succeeded, failed, rolled back, aborted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deployer import services
from deployer.events import event_emitted
from deployer.models import App, Deployment
from deployer.workflow import Workflow
from tests.deployer.fakes import FakeCluster, FakeHealth

Run = Callable[..., Deployment]


@pytest.fixture
def heard() -> Iterator[list[dict[str, Any]]]:
    """Every event emitted during the test, as its listener receives it."""
    events: list[dict[str, Any]] = []

    def listen(sender: Any, **kwargs: Any) -> None:
        events.append(kwargs)

    event_emitted.connect(listen, dispatch_uid="test-heard")
    yield events
    event_emitted.disconnect(dispatch_uid="test-heard")


def names(heard: list[dict[str, Any]]) -> list[str]:
    return [event["event"] for event in heard]


def test_a_deploy_announces_that_it_started_and_succeeded(
    app: App, run_workflow: Run, heard: list[dict[str, Any]]
) -> None:
    deployment = run_workflow(app)

    assert names(heard) == ["started", "succeeded"]
    assert all(event["deployment"].pk == deployment.pk for event in heard)
    assert heard[1]["app"] == app
    assert heard[1]["message"].startswith(f"Deploy #{deployment.pk} of {app}: v1 is live at")


def test_a_failure_before_the_switch_is_failed_alone(
    app: App, run_workflow: Run, cluster: FakeCluster, heard: list[dict[str, Any]]
) -> None:
    cluster.pod_outcome = lambda image: "pull"

    deployment = run_workflow(app, image="nope/nope:1")

    assert names(heard) == ["started", "failed"]
    assert heard[1]["details"]["reason"] == deployment.failure_reason
    assert "could not be pulled" in heard[1]["message"]


def test_a_failure_after_the_switch_is_failed_and_rolled_back_to_the_previous_version(
    app: App, run_workflow: Run, health: FakeHealth, heard: list[dict[str, Any]]
) -> None:
    run_workflow(app)
    heard.clear()
    health.lb_answers = False

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.FAILED
    assert names(heard) == ["started", "failed", "rolled_back"]
    rolled_back = heard[2]
    assert "traffic had moved to v2 and was pointed back to v1" in rolled_back["message"]
    assert rolled_back["details"]["restored_version"] == 1


def test_an_abort_during_the_run_is_announced_as_aborted(
    app: App, run_workflow: Run, heard: list[dict[str, Any]]
) -> None:
    def abort_now(workflow: Workflow) -> None:
        Deployment.objects.filter(pk=workflow.deployment.pk).update(abort_requested=True)

    deployment = run_workflow(app, before=abort_now)

    assert deployment.status == Deployment.Status.ABORTED
    assert names(heard) == ["started", "aborted"]


def test_a_request_is_announced_as_queued_and_an_abort_before_it_started_as_aborted(
    app: App, heard: list[dict[str, Any]]
) -> None:
    deployment = services.request_deploy(app, image="demo/hello:2")
    services.request_abort(deployment)

    assert names(heard) == ["queued", "aborted"]
    assert heard[0]["message"] == "Deploy of demo/hello:2 queued by system (ui)."
    assert "before it started" in heard[1]["message"]
