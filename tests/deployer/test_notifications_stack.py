"""A real deploy through the stack notifies a subscriber: the worker's Celery task posts to it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from dashboard.notifications.models import Delivery, Subscription
from deployer import services
from deployer.models import App, Deployment
from tests.dashboard.notifykit import Receiver, http_receiver
from tests.deployer.test_integration import finished
from tests.servers import Stack

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A Slack-compatible receiver on a free loopback port."""
    with http_receiver() as server:
        yield server


def test_a_deploy_through_the_stack_posts_queued_started_and_succeeded(
    live: Stack, receiver: Receiver
) -> None:
    Subscription.objects.create(
        name="ops",
        channel=Subscription.Channel.SLACK,
        target=receiver.url("/services/T0/B0/X"),
        events=["queued", "started", "succeeded", "failed"],
    )
    app = App.objects.create(
        name="notified",
        image="demo/hello:1",
        replicas=1,
        frontend="notified.localhost",
        health_deadline=15,
        guard_bake_seconds=0,
    )

    deployment = finished(live, services.request_deploy(app))

    assert deployment.status == Deployment.Status.SUCCEEDED
    received = receiver.wait_for(3, timeout=30)
    texts = {request.json()["text"] for request in received}
    assert {text.splitlines()[0] for text in texts} == {
        "*Deploy queued: notified*",
        "*Deploy started: notified*",
        "*Deploy succeeded: notified v1*",
    }, live.logs()
    link = f"/deployments/{deployment.pk}/|Open the live log>"
    assert all(text.endswith(link) for text in texts)
    rows = Delivery.objects.filter(subscription__name="ops").order_by("event")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(row.is_terminal for row in rows):
        time.sleep(0.1)  # the worker records the attempt once the receiver answered
        rows = rows.all()
    assert [(row.event, row.status, row.attempts) for row in rows] == [
        ("queued", Delivery.Status.DELIVERED, 1),
        ("started", Delivery.Status.DELIVERED, 1),
        ("succeeded", Delivery.Status.DELIVERED, 1),
    ]
