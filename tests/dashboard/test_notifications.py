"""Subscriptions: who hears which event, the Notifications page, its form and the REST API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from dashboard.notifications import listener
from dashboard.notifications.models import Delivery, DeliveryAttempt, SeenRefusal, Subscription
from dashboard.notifications.refusals import announce_refusals
from dashboard.notifications.tasks import sweep
from deployer.events import EVENTS, emit
from deployer.models import App, Deployment
from tests.dashboard.fleetkit import REFUSAL, Fleet

SLACK = "https://hooks.example.com/services/T0/B0/X"


def subscription(
    name: str, events: list[str], app: App | None = None, **fields: Any
) -> Subscription:
    values = {"channel": Subscription.Channel.SLACK, "target": SLACK, **fields}
    return Subscription.objects.create(name=name, events=events, app=app, **values)


def test_an_event_makes_one_delivery_per_subscription_that_wants_it(
    app: App, make_app: Callable[..., App], make_deployment: Callable[..., Deployment]
) -> None:
    other = make_app(name="other")
    everyone = subscription("everyone", ["failed", "succeeded"])
    mine = subscription("mine", ["failed"], app=app)
    subscription("other app", ["failed"], app=other)
    subscription("other event", ["succeeded"], app=app)
    subscription("disabled", ["failed"], enabled=False)
    deployment = make_deployment(app, version=2, status=Deployment.Status.FAILED)

    emit("failed", "it failed", deployment=deployment, details={"reason": "no"})

    deliveries = Delivery.objects.order_by("subscription__name")
    assert [d.subscription for d in deliveries] == [everyone, mine]
    assert {d.status for d in deliveries} == {Delivery.Status.PENDING}
    payload = deliveries[0].payload
    assert (payload["event"], payload["app"], payload["version"]) == ("failed", "hello", 2)
    assert payload["reason"] == "no" and payload["url"].endswith(f"/deployments/{deployment.pk}/")


def test_an_event_of_no_app_reaches_only_the_subscriptions_for_every_app(app: App) -> None:
    everyone = subscription("everyone", ["drain_stuck"])
    Subscription.objects.filter(pk=subscription("mine", ["failed"], app=app).pk).update(
        events=["drain_stuck"]
    )

    emit("drain_stuck", "node-1 was not drained", details={"node": "node-1"})

    assert [d.subscription for d in Delivery.objects.all()] == [everyone]


def test_deliveries_are_sent_only_once_the_emitters_transaction_commits(
    app: App,
    make_deployment: Callable[..., Deployment],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sent: list[list[int]] = []
    monkeypatch.setattr(listener, "enqueue", sent.append)
    subscription("everyone", ["started"])
    deployment = make_deployment(app)

    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        emit("started", "started", deployment=deployment)
        assert sent == []

    assert len(callbacks) == 1
    assert sent == [[Delivery.objects.get().pk]]


def test_a_listener_that_fails_leaves_the_emitters_transaction_usable(
    app: App, make_deployment: Callable[..., Deployment], monkeypatch: pytest.MonkeyPatch
) -> None:
    subscription("everyone", ["started"])
    deployment = make_deployment(app)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the payload could not be built")

    monkeypatch.setattr(listener, "build_payload", broken)
    with transaction.atomic():
        emit("started", "started", deployment=deployment)
        Deployment.objects.filter(pk=deployment.pk).update(worker="still usable")

    assert Deployment.objects.get(pk=deployment.pk).worker == "still usable"
    assert not Delivery.objects.exists()


def test_a_refused_configuration_is_announced_once_per_load_balancer_and_revision(
    db: None, fleet: Fleet
) -> None:
    subscription("everyone", ["lb_refused_config"])

    first = announce_refusals(fleet.store)
    again = announce_refusals(fleet.store)

    assert first == [("lb-1", fleet.refused)] and again == []
    [row] = Delivery.objects.all()
    assert row.payload["details"] == {
        "balancer": "lb-1",
        "revision": fleet.refused,
        "reason": REFUSAL,
    }
    assert f"refused the configuration of etcd revision {fleet.refused}" in row.payload["message"]
    assert row.payload["url"].endswith("/load-balancer/")
    assert SeenRefusal.objects.count() == 1


# The page


@pytest.fixture
def editor(role_user: Any) -> Client:
    """A session of a user who may view and change apps: admin on every namespace."""
    user = role_user("editor", "admin")
    client = Client()
    client.force_login(user)
    return client


def form(**fields: Any) -> dict[str, Any]:
    data = {"name": "ops", "app": "", "channel": "slack", "target": SLACK, "enabled": "on"}
    data.update(fields)
    data.setdefault("events", ["failed", "rolled_back"])
    return data


def test_the_page_lists_subscriptions_and_the_delivery_log_with_attempts(
    admin_client: Client, app: App
) -> None:
    hook = subscription("ops channel", ["failed"], app=app)
    delivery = Delivery.objects.create(
        subscription=hook,
        event="failed",
        payload={"title": "Deploy failed", "app": "hello", "version": 3, "url": "http://x/"},
        status=Delivery.Status.RETRYING,
        attempts=1,
        last_status_code=503,
        last_error="HTTP 503: try again later",
    )
    DeliveryAttempt.objects.create(delivery=delivery, status_code=503, error="HTTP 503")

    page = admin_client.get("/notifications/").content.decode()

    assert "ops channel" in page and "Deploy failed" in page and "hello v3" in page
    assert "HTTP 503: try again later" in page and "retrying" in page
    assert 'href="/notifications/new/"' in page


def test_a_viewer_sees_the_page_but_no_way_to_change_it(client: Client, viewer: Any) -> None:
    subscription("ops", ["failed"])
    client.force_login(viewer)

    page = client.get("/notifications/").content.decode()

    assert "ops" in page and "/notifications/new/" not in page and "Delete" not in page


def test_it_creates_a_signed_webhook_and_shows_its_secret_once(editor: Client) -> None:
    response = editor.post(
        "/notifications/new/",
        form(channel="webhook", target="https://ci.example.com/greenlight"),
        follow=True,
    )

    saved = Subscription.objects.get()
    assert len(saved.secret) >= 40
    assert saved.secret in response.content.decode()
    again = editor.get("/notifications/").content.decode()
    assert saved.secret not in again and saved.masked_secret in again


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"target": "not a url"}, "target", "Enter an http:// or https:// URL with a host"),
        ({"target": "ftp://example.com/x"}, "target", "Enter an http:// or https:// URL"),
        (
            {"channel": "email", "target": "ops@example.com, nobody"},
            "target",
            "Not an email address: nobody.",
        ),
        ({"events": ["failed", "exploded"]}, "events", "Select a valid choice. exploded"),
        ({"events": []}, "events", "This field is required."),
        ({"app": "999"}, "app", "Select a valid choice."),
    ],
)
def test_the_form_names_what_to_fix_and_saves_nothing(
    editor: Client, fields: dict[str, Any], field: str, message: str
) -> None:
    response = editor.post("/notifications/new/", form(**fields))

    assert response.status_code == 400
    assert message in str(response.context["form"].errors[field])
    assert not Subscription.objects.exists()


def test_an_app_subscription_cannot_ask_for_events_of_no_app(editor: Client, app: App) -> None:
    response = editor.post(
        "/notifications/new/", form(app=str(app.pk), events=["failed", "drain_stuck"])
    )

    assert response.status_code == 400
    assert "drain_stuck belongs to no app" in str(response.context["form"].errors["events"])


def test_it_edits_and_deletes_a_subscription(editor: Client, app: App) -> None:
    hook = subscription("ops", ["failed"])

    editor.post(f"/notifications/{hook.pk}/edit/", form(name="ops", app=str(app.pk)))
    hook.refresh_from_db()
    assert (hook.app, hook.events) == (app, ["failed", "rolled_back"])

    editor.post(f"/notifications/{hook.pk}/delete/")
    assert not Subscription.objects.exists()


# The API


def test_the_api_creates_a_webhook_subscription_and_reveals_its_secret_only_then(
    api: APIClient, app: App
) -> None:
    created = api.post(
        "/api/notifications/subscriptions/",
        {
            "name": "ci",
            "app": app.pk,
            "events": ["succeeded", "queued"],
            "channel": "webhook",
            "target": "https://ci.example.com/hook",
        },
        format="json",
    )

    assert created.status_code == 201, created.content
    secret = Subscription.objects.get().secret
    assert created.json()["secret"] == secret
    assert created.json()["events"] == ["queued", "succeeded"]  # in EVENTS order
    listed = api.get("/api/notifications/subscriptions/").json()["results"]
    assert listed[0]["secret"] == f"••••{secret[-4:]}"
    rotated = api.patch(
        f"/api/notifications/subscriptions/{created.json()['id']}/",
        {"rotate_secret": True},
        format="json",
    ).json()
    assert rotated["secret"] != secret and rotated["secret"] == Subscription.objects.get().secret


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"events": ["nope"]}, "events", "Unknown event 'nope'"),
        ({"events": []}, "events", "Choose at least one event"),
        ({"target": "hooks.example.com"}, "target", "Enter an http:// or https:// URL"),
        ({"channel": "email", "target": "a@b"}, "target", "Not an email address: a@b."),
        ({"events": ["lb_refused_config"], "app": "APP"}, "events", "belongs to no app"),
        ({"app": 999}, "app", "Invalid pk"),
    ],
)
def test_the_api_refuses_a_bad_subscription_naming_the_field(
    api: APIClient, app: App, body: dict[str, Any], field: str, message: str
) -> None:
    data = {"name": "x", "events": ["failed"], "channel": "slack", "target": SLACK, **body}
    if data.get("app") == "APP":
        data["app"] = app.pk

    response = api.post("/api/notifications/subscriptions/", data, format="json")

    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    assert not Subscription.objects.exists()


def test_the_api_lists_the_delivery_log_with_each_attempt(api: APIClient) -> None:
    hook = subscription("ops", list(EVENTS))
    delivery = Delivery.objects.create(
        subscription=hook, event="failed", status=Delivery.Status.FAILED, attempts=1
    )
    DeliveryAttempt.objects.create(delivery=delivery, status_code=404, error="HTTP 404")
    Delivery.objects.create(subscription=hook, event="queued", status=Delivery.Status.DELIVERED)

    failed = api.get("/api/notifications/deliveries/?status=failed").json()["results"]

    assert [row["id"] for row in failed] == [delivery.pk]
    assert failed[0]["attempt_log"][0]["status_code"] == 404
    assert api.get("/api/notifications/deliveries/?status=lost").status_code == 400


def test_the_sweep_sends_again_the_deliveries_whose_task_never_reached_the_broker(
    db: None, records: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = subscription("ops", ["failed"])
    now = timezone.now()

    def row(**fields: Any) -> Delivery:
        return Delivery.objects.create(subscription=hook, event="failed", **fields)

    never_sent = row(created_at=now - timedelta(minutes=1))
    lost_in_broker = row(
        created_at=now - timedelta(minutes=9), enqueued_at=now - timedelta(minutes=9)
    )
    row(created_at=now)  # its task is being sent
    row(created_at=now - timedelta(minutes=1), enqueued_at=now - timedelta(seconds=50))
    row(created_at=now - timedelta(minutes=9), status=Delivery.Status.RETRYING, attempts=1)
    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(listener.taskqueue, "send", lambda name, pk: sent.append((name, pk)))

    sweep()

    assert sent == [(listener.DELIVER, never_sent.pk), (listener.DELIVER, lost_in_broker.pk)]
    never_sent.refresh_from_db()
    assert never_sent.enqueued_at is not None
