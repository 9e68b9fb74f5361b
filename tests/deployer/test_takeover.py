"""A run handed over to another worker stops acting at once and leaves the rollback to it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from deployer.models import App, Deployment
from deployer.workflow import StopDeployment, Workflow, backend_name
from tests.deployer.fakes import FakeCluster, FakeLB, ListSink

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

Run = Callable[..., Deployment]

NEW_OWNER = "worker-a@host#0a1b2c3d"


def hand_over(workflow: Workflow) -> None:
    """What take_over does when another worker recovers this run."""
    Deployment.objects.filter(pk=workflow.deployment.pk).update(worker=NEW_OWNER)


def handed_over_after(method: str, *, then_fail: bool = False) -> Callable[[Workflow], None]:
    """Hand the run over once ``method`` of the workflow is done (or, with then_fail, fail it)."""

    def before(workflow: Workflow) -> None:
        original = getattr(workflow, method)

        def then_hand_over(*args: object, **kwargs: object) -> object:
            result = original(*args, **kwargs)
            hand_over(workflow)
            if then_fail:
                raise StopDeployment("the pods never became healthy")
            return result

        setattr(workflow, method, then_hand_over)

    return before


def assert_stopped_without_cleanup(deployment: Deployment, sink: ListSink) -> None:
    assert deployment.status == Deployment.Status.RUNNING  # the new owner finishes it
    assert deployment.worker == NEW_OWNER
    assert f"This run was taken over by {NEW_OWNER}; stopping here." in sink.text()
    assert "Rolling back" not in sink.text()


def test_a_run_handed_over_before_the_switch_stops_at_the_next_step_without_cleanup(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB, sink: ListSink
) -> None:
    run_workflow(app)
    sink.lines.clear()

    deployment = run_workflow(app, image="demo/hello:2", before=handed_over_after("create"))

    assert_stopped_without_cleanup(deployment, sink)
    # v2 was created and is left to the new owner; nothing was waited on, routed or deleted.
    assert cluster.versions_.keys() == {1, 2}
    assert cluster.deleted == []
    assert lb.live_version(app.frontend) == 1
    assert lb.backends[backend_name("default", app.name, 2)]["servers"] == []  # never routed
    assert deployment.steps["create"]["state"] == "done"
    assert deployment.steps["pods"]["state"] == "pending"


def test_a_run_handed_over_after_the_switch_neither_retires_nor_swaps_back(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB, sink: ListSink
) -> None:
    run_workflow(app)
    sink.lines.clear()

    deployment = run_workflow(app, image="demo/hello:2", before=handed_over_after("verify"))

    assert_stopped_without_cleanup(deployment, sink)
    assert lb.live_version(app.frontend) == 2
    assert cluster.versions_.keys() == {1, 2}
    assert backend_name("default", app.name, 1) in lb.backends
    assert deployment.steps["retire"]["state"] == "pending"


def test_a_run_that_fails_after_it_was_handed_over_does_not_roll_back(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB, sink: ListSink
) -> None:
    run_workflow(app)
    sink.lines.clear()

    deployment = run_workflow(
        app, image="demo/hello:2", before=handed_over_after("wait_pods", then_fail=True)
    )

    assert_stopped_without_cleanup(deployment, sink)
    assert cluster.versions_.keys() == {1, 2}
    assert cluster.deleted == []
    assert lb.live_version(app.frontend) == 1


def test_a_run_still_owned_deploys_as_before(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB, sink: ListSink
) -> None:
    run_workflow(app)

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert "taken over" not in sink.text()
    assert cluster.versions_.keys() == {2}
