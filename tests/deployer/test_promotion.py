"""Manual promotion with fake collaborators: wait after the health checks, then promote,
reject, time out or abort; the heartbeat and recovery of a run that waits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from deployer import events, heartbeat, promotion, services
from deployer.errors import NothingToDo
from deployer.heartbeat import stale_deployments, take_over
from deployer.kinds import WORKFLOWS
from deployer.models import App, Deployment, IllegalTransition
from deployer.workflow import Timing, backend_name
from tests.deployer.fakes import FakeClock, FakeCluster, FakeLB, ListSink

pytestmark = pytest.mark.both_databases

Run = Callable[..., Deployment]


@pytest.fixture
def manual(make_app: Callable[..., App]) -> App:
    """An app deployed once (v1 live) whose deploys wait for promotion, at most 60 s."""
    return make_app(promotion="manual", promotion_timeout_seconds=60)


@pytest.fixture
def heard() -> Iterator[list[dict[str, Any]]]:
    """The events emitted while the test runs."""
    received: list[dict[str, Any]] = []

    def listener(**kwargs: Any) -> None:
        received.append(kwargs)

    events.event_emitted.connect(listener, weak=False)
    yield received
    events.event_emitted.disconnect(listener)


@pytest.fixture
def alice(db: None) -> Any:
    return get_user_model().objects.create_user("alice")


class Waiting:
    """What the test saw on each sleep of the waiting run; acts once at the ``at``-th sleep."""

    def __init__(self, lb: FakeLB, app: App, act: Callable[[Deployment], object], at: int = 3):
        self.lb, self.app, self.act, self.at = lb, app, act, at
        self.sleeps = 0
        self.seen: list[tuple[str, int | None]] = []

    def __call__(self) -> None:
        deployment = Deployment.objects.filter(app=self.app).order_by("-pk").first()
        assert deployment is not None
        if deployment.status != Deployment.Status.AWAITING_PROMOTION:
            return
        self.sleeps += 1
        self.seen.append((deployment.status, self.lb.live_version(self.app.frontend)))
        if self.sleeps == self.at:
            self.act(deployment)


def deploy_v2_with(
    manual: App,
    run_workflow: Run,
    clock: FakeClock,
    lb: FakeLB,
    act: Callable[..., object],
    sink: ListSink | None = None,
) -> tuple[Deployment, Waiting]:
    App.objects.filter(pk=manual.pk).update(promotion="automatic")
    run_workflow(manual)  # v1, live
    App.objects.filter(pk=manual.pk).update(promotion="manual")
    if sink is not None:
        sink.lines.clear()
    waiting = Waiting(lb, manual, act)
    clock.on_sleep = waiting
    return run_workflow(manual, image="demo/hello:2"), waiting


def test_it_waits_with_the_old_version_serving_and_switches_once_promoted(
    manual: App,
    run_workflow: Run,
    clock: FakeClock,
    lb: FakeLB,
    sink: ListSink,
    alice: Any,
    heard: list[dict[str, Any]],
) -> None:
    deployment, waiting = deploy_v2_with(
        manual,
        run_workflow,
        clock,
        lb,
        lambda row: services.request_promotion(row, Deployment.Decision.PROMOTE, user=alice),
        sink,
    )

    assert deployment.status == Deployment.Status.SUCCEEDED
    # It waited, polling often, with v1 serving every time it looked.
    assert waiting.seen == [(Deployment.Status.AWAITING_PROMOTION, 1)] * 3
    assert lb.live_version(manual.frontend) == 2
    assert deployment.promotion_decision == "promote"
    assert deployment.promotion_decided_by == alice
    assert deployment.awaiting_since is not None
    assert deployment.steps["promotion"]["state"] == "done"
    text = sink.text()
    assert "awaits promotion; v1 keeps serving. Promote or Reject it within 60 s" in text
    assert "Promoted by alice." in text
    # The wait comes between the health checks and the switch.
    steps = [step for _, step, message in sink.lines if "done in" in message]
    assert steps.index("health") < steps.index("promotion") < steps.index("switch")
    awaiting = [e for e in heard if e["event"] == "awaiting_promotion"]
    assert len(awaiting) == 1
    assert awaiting[0]["deployment"].pk == deployment.pk
    assert "within 60 s" in awaiting[0]["message"]
    assert awaiting[0]["details"]["timeout_seconds"] == 60


def test_a_reject_rolls_back_before_the_switch_with_the_old_version_serving(
    manual: App, run_workflow: Run, clock: FakeClock, lb: FakeLB, cluster: FakeCluster, alice: Any
) -> None:
    frontend_writes: list[str] = []
    deployment, _ = deploy_v2_with(
        manual,
        run_workflow,
        clock,
        lb,
        lambda row: services.request_promotion(row, Deployment.Decision.REJECT, user=alice),
    )
    frontend_writes = [w for w in lb.writes if w.startswith("point")]

    assert deployment.status == Deployment.Status.FAILED
    assert deployment.failure_reason == "rejected by alice"
    assert deployment.promotion_decision == "reject"
    assert lb.live_version(manual.frontend) == 1
    # As after a failed health check: v2 and its never-routed backend are gone.
    assert cluster.versions_.keys() == {1}
    assert backend_name("default", manual.name, 2) not in lb.backends
    assert all("-v2" not in w for w in frontend_writes)
    assert deployment.steps["promotion"]["state"] == "failed"
    assert "switch" not in {k for k, v in deployment.steps.items() if v["state"] != "pending"}


def test_the_timeout_rejects_it(
    manual: App, run_workflow: Run, clock: FakeClock, lb: FakeLB, cluster: FakeCluster
) -> None:
    deployment, waiting = deploy_v2_with(manual, run_workflow, clock, lb, lambda row: None)

    assert deployment.status == Deployment.Status.FAILED
    assert deployment.failure_reason == (
        "not promoted within 60 s: rejected when the promotion timed out"
    )
    assert deployment.promotion_decision == "reject"
    assert deployment.promotion_decided_by is None
    # Polled every half second for the minute it waited.
    assert 100 <= waiting.sleeps <= 130
    assert cluster.versions_.keys() == {1}
    assert lb.live_version(manual.frontend) == 1


def test_an_abort_while_waiting_rolls_back_as_aborted(
    manual: App, run_workflow: Run, clock: FakeClock, lb: FakeLB, cluster: FakeCluster, alice: Any
) -> None:
    deployment, _ = deploy_v2_with(
        manual, run_workflow, clock, lb, lambda row: services.request_abort(row, user=alice)
    )

    assert deployment.status == Deployment.Status.ABORTED
    assert cluster.versions_.keys() == {1}
    assert lb.live_version(manual.frontend) == 1
    assert deployment.promotion_decision == ""


def test_an_automatic_deploy_has_no_promotion_step(
    app: App, run_workflow: Run, heard: list[dict[str, Any]]
) -> None:
    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert "promotion" not in deployment.steps
    assert not [e for e in heard if e["event"] == "awaiting_promotion"]


def test_promote_and_reject_refuse_a_deployment_that_does_not_wait(
    manual: App, run_workflow: Run, alice: Any
) -> None:
    App.objects.filter(pk=manual.pk).update(promotion="automatic")
    finished = run_workflow(manual)
    for decision in Deployment.Decision.values:
        with pytest.raises(NothingToDo, match="is succeeded, not awaiting promotion"):
            services.request_promotion(finished, decision, user=alice)
    assert Deployment.objects.get(pk=finished.pk).promotion_decision == ""


def test_a_second_decision_is_refused_once_the_first_was_taken(manual: App, alice: Any) -> None:
    deployment = Deployment.objects.create(app=manual, image=manual.image, descriptor={})
    deployment.start(worker="w")
    deployment.await_promotion()

    services.request_promotion(deployment, Deployment.Decision.PROMOTE, user=alice)
    with pytest.raises(NothingToDo, match="not awaiting promotion"):
        services.request_promotion(deployment, Deployment.Decision.REJECT, user=alice)
    deployment.refresh_from_db()
    assert (deployment.status, deployment.promotion_decision) == ("running", "promote")


def test_the_timeout_and_a_decision_cannot_both_win(manual: App, alice: Any) -> None:
    deployment = Deployment.objects.create(app=manual, image=manual.image, descriptor={})
    deployment.start(worker="w")
    deployment.await_promotion()
    # The run's own copy, read before the user's decision landed.
    stale = Deployment.objects.get(pk=deployment.pk)

    services.request_promotion(deployment, Deployment.Decision.PROMOTE, user=alice)
    with pytest.raises(IllegalTransition):
        stale.stop_awaiting(Deployment.Decision.REJECT)
    deployment.refresh_from_db()
    assert (deployment.status, deployment.promotion_decision) == ("running", "promote")

    # And the other way round: once the timeout rejected it, Promote is too late.
    deployment.await_promotion()
    Deployment.objects.get(pk=deployment.pk).stop_awaiting(Deployment.Decision.REJECT)
    with pytest.raises(NothingToDo, match="is running, not awaiting promotion"):
        services.request_promotion(deployment, Deployment.Decision.PROMOTE, user=alice)
    deployment.refresh_from_db()
    assert deployment.promotion_decision == "reject"
    assert deployment.promotion_decided_by is None


@pytest.mark.django_db(transaction=True)
def test_a_run_awaiting_promotion_keeps_beating_and_is_recovered_once_it_stops(
    manual: App,
) -> None:
    deployment = Deployment.objects.create(app=manual, image=manual.image, descriptor={})
    deployment.start(worker="host-a#1")
    deployment.await_promotion()
    Deployment.objects.filter(pk=deployment.pk).update(heartbeat_at=None, started_at=None)

    with heartbeat.Heartbeat(deployment.pk, "host-a#1", every=0.01):
        deadline = time.monotonic() + 5
        while Deployment.objects.get(pk=deployment.pk).heartbeat_at is None:
            assert time.monotonic() < deadline, "no beat while awaiting promotion"
            time.sleep(0.01)

    Deployment.objects.filter(pk=deployment.pk).update(
        heartbeat_at=heartbeat.stale_before() - heartbeat.LOST_AFTER
    )
    assert stale_deployments() == [(deployment.pk, "host-a#1")]
    assert take_over(deployment.pk, "host-a#1", "host-b#2")


def test_recovering_a_lost_run_that_awaited_promotion_rolls_it_back(
    manual: App, run_workflow: Run, clock: FakeClock, lb: FakeLB, cluster: FakeCluster
) -> None:
    def lose_the_worker(row: Deployment) -> None:
        # The worker restarts while its run waits: its new incarnation takes the run over.
        assert take_over(row.pk, "test", "test#2")

    deployment, _ = deploy_v2_with(manual, run_workflow, clock, lb, lose_the_worker)
    assert deployment.status == Deployment.Status.AWAITING_PROMOTION  # left to its new worker

    deployment.refresh_from_db()
    sink = ListSink()
    WORKFLOWS[deployment.kind](
        deployment=deployment,
        cluster=cluster,
        lb=lb,
        health=None,  # type: ignore[arg-type]
        clock=clock,
        sink=sink,
        timing=Timing(),
    ).recover("test")

    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.FAILED
    assert "worker running this deployment was lost" in deployment.failure_reason
    assert cluster.versions_.keys() == {1}
    assert lb.live_version(manual.frontend) == 1


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"promotion": "later"}, "promotion", "Unknown promotion mode 'later': choose automatic"),
        ({"promotion_timeout_seconds": 0}, "promotion_timeout_seconds", "between 1 second and"),
        (
            {"promotion_timeout_seconds": 7 * 24 * 3600 + 1},
            "promotion_timeout_seconds",
            "604800 seconds (7 days)",
        ),
    ],
)
def test_it_refuses_a_bad_promotion_setting_on_its_field(
    manual: App, changes: dict[str, Any], field: str, message: str
) -> None:
    for key, value in changes.items():
        setattr(manual, key, value)
    with pytest.raises(ValidationError) as refused:
        manual.clean()
    assert any(message in text for text in refused.value.message_dict[field])


def test_the_timeout_is_said_as_a_person_says_it() -> None:
    assert [promotion.span(s) for s in (45, 600, 3600, 9000, 7 * 86400)] == [
        "45 s",
        "10 min",
        "60 min",
        "2 h 30 min",
        "7 d",
    ]
