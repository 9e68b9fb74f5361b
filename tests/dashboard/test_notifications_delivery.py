"""Deliveries against real receivers: Slack and Teams bodies, the signed webhook, email, retries."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from dashboard.api.hooks import signature
from dashboard.notifications import delivery
from dashboard.notifications.models import Delivery, Subscription
from dashboard.notifications.tasks import deliver
from deployer.events import emit
from deployer.models import App, Deployment
from tests.dashboard.notifykit import Mailbox, Receiver, http_receiver, smtp_server

Subscribe = Callable[..., Subscription]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP receiver on a free loopback port."""
    with http_receiver() as server:
        yield server


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """An SMTP server on a free loopback port."""
    with smtp_server() as server:
        yield server


@pytest.fixture
def subscribe(db: None) -> Subscribe:
    """Create a subscription: ``subscribe(channel, target, events=[...], app=None)``."""

    def make(
        channel: str, target: str, events: list[str] | None = None, **fields: Any
    ) -> Subscription:
        return Subscription.objects.create(
            name=f"{channel} hook",
            channel=channel,
            target=target,
            events=events or ["failed"],
            secret="s3cret-for-tests" if channel == Subscription.Channel.WEBHOOK else "",
            **fields,
        )

    return make


@pytest.fixture
def failed(app: App, make_deployment: Callable[..., Deployment], settings: Any) -> Deployment:
    """A failed deploy of hello v3, with a public URL for the dashboard."""
    settings.WEB_URL = "https://greenlight.example.com"
    return make_deployment(
        app,
        version=3,
        status=Deployment.Status.FAILED,
        failure_reason="pod hello-v3-abc never became healthy",
    )


def emitted(deployment: Deployment) -> Delivery:
    emit(
        "failed",
        f"Deploy #{deployment.pk} of hello failed: {deployment.failure_reason}",
        deployment=deployment,
        details={"reason": deployment.failure_reason},
    )
    return Delivery.objects.get()


def test_it_posts_a_slack_body_with_the_app_version_reason_and_the_live_log_link(
    receiver: Receiver, subscribe: Subscribe, failed: Deployment
) -> None:
    subscribe(Subscription.Channel.SLACK, receiver.url("/services/T0/B0/X"))

    outcome = delivery.attempt(emitted(failed).pk)

    assert outcome is not None and outcome.status == Delivery.Status.DELIVERED
    [request] = receiver.received
    assert request.path == "/services/T0/B0/X"
    assert request.headers["Content-Type"] == "application/json"
    body = request.json()
    assert list(body) == ["text"]
    text = body["text"]
    assert text.startswith("*Deploy failed: hello v3*\n")
    assert "never became healthy" in text
    link = f"https://greenlight.example.com/deployments/{failed.pk}/"
    assert text.endswith(f"<{link}|Open the live log>")


def test_it_escapes_what_slack_reads_as_markup(
    receiver: Receiver, subscribe: Subscribe, failed: Deployment
) -> None:
    subscribe(Subscription.Channel.SLACK, receiver.url())
    emit("failed", "a <b> & <!channel>", deployment=failed)

    delivery.attempt(Delivery.objects.get().pk)

    assert "a &lt;b&gt; &amp; &lt;!channel&gt;" in receiver.received[0].json()["text"]


def test_it_posts_a_teams_adaptive_card_with_facts_and_an_open_url_action(
    receiver: Receiver, subscribe: Subscribe, failed: Deployment
) -> None:
    subscribe(
        Subscription.Channel.TEAMS, receiver.url("/workflows/abc/triggers/manual/paths/invoke")
    )

    delivery.attempt(emitted(failed).pk)

    body = receiver.received[0].json()
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["body"][0]["text"] == "Deploy failed: hello v3"
    facts = {fact["title"]: fact["value"] for fact in card["body"][2]["facts"]}
    assert facts == {
        "Event": "Deploy failed",
        "App": "hello",
        "Version": "v3",
        "Reason": "pod hello-v3-abc never became healthy",
    }
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open the live log",
            "url": f"https://greenlight.example.com/deployments/{failed.pk}/",
        }
    ]


def test_the_generic_webhook_is_signed_like_the_incoming_one_and_the_signature_verifies(
    receiver: Receiver, subscribe: Subscribe, failed: Deployment
) -> None:
    subscription = subscribe(Subscription.Channel.WEBHOOK, receiver.url())
    row = emitted(failed)

    delivery.attempt(row.pk)

    [request] = receiver.received
    stamp = request.headers["X-Greenlight-Timestamp"]
    sent = request.headers["X-Greenlight-Signature"]
    assert hmac.compare_digest(sent, signature(subscription.secret, request.body, stamp))
    assert sent != signature("another secret", request.body, stamp)
    assert request.headers["X-Greenlight-Event"] == "failed"
    assert request.headers["X-Greenlight-Delivery"] == str(row.pk)
    payload = request.json()
    assert payload["event"] == "failed" and payload["app"] == "hello"
    assert payload["version"] == 3 and payload["deployment"] == failed.pk
    assert payload["reason"] == "pod hello-v3-abc never became healthy"
    assert payload["url"] == f"https://greenlight.example.com/deployments/{failed.pk}/"


def test_it_mails_the_headline_and_the_link_through_django_mail(
    mailbox: Mailbox, subscribe: Subscribe, failed: Deployment, settings: Any
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", mailbox.port
    settings.DEFAULT_FROM_EMAIL = "greenlight@example.com"
    subscribe(Subscription.Channel.EMAIL, "ops@example.com, dev@example.com")

    outcome = delivery.attempt(emitted(failed).pk)

    assert outcome is not None and outcome.status == Delivery.Status.DELIVERED
    [(sender, recipients, mail)] = mailbox.mails
    assert sender == "greenlight@example.com"
    assert recipients == ["ops@example.com", "dev@example.com"]
    assert mail["Subject"] == "[Greenlight] Deploy failed: hello v3"
    text = mail.get_payload()
    assert "Reason: pod hello-v3-abc never became healthy" in text
    assert f"Live log: https://greenlight.example.com/deployments/{failed.pk}/" in text


def test_it_retries_with_celery_after_the_receiver_failed_and_records_each_attempt(
    receiver: Receiver, subscribe: Subscribe, failed: Deployment
) -> None:
    receiver.answers = [503, 502]
    subscribe(Subscription.Channel.SLACK, receiver.url())
    row = emitted(failed)

    deliver.apply(args=[row.pk])  # eager: each retry runs at once, without its countdown

    row.refresh_from_db()
    assert row.status == Delivery.Status.DELIVERED
    assert row.attempts == 3
    assert [r.status for r in receiver.received] == [503, 502, 200]
    attempts = list(row.attempt_log.values_list("status_code", "ok"))
    assert attempts == [(503, False), (502, False), (200, True)]
    assert row.last_status_code == 200 and row.finished_at is not None


def test_it_gives_up_after_the_bounded_number_of_attempts(
    receiver: Receiver, subscribe: Subscribe, failed: Deployment, settings: Any
) -> None:
    settings.NOTIFY_MAX_ATTEMPTS = 3
    receiver.answers = [500] * 10
    subscribe(Subscription.Channel.WEBHOOK, receiver.url())
    row = emitted(failed)

    deliver.apply(args=[row.pk])

    row.refresh_from_db()
    assert (row.status, row.attempts, len(receiver.received)) == (Delivery.Status.FAILED, 3, 3)
    assert row.last_error.startswith("HTTP 500: try again later")


def test_a_target_that_refuses_the_request_itself_is_not_tried_again(
    receiver: Receiver, subscribe: Subscribe, failed: Deployment
) -> None:
    receiver.answers = [404]
    subscribe(Subscription.Channel.SLACK, receiver.url())
    row = emitted(failed)

    deliver.apply(args=[row.pk])

    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_status_code) == (Delivery.Status.FAILED, 1, 404)


def test_an_unreachable_target_is_recorded_as_an_error_and_retried_later(
    subscribe: Subscribe, failed: Deployment, settings: Any
) -> None:
    settings.NOTIFY_RETRY_SECONDS = 7
    with http_receiver() as gone:
        url = gone.url()
    subscribe(Subscription.Channel.SLACK, url)
    row = emitted(failed)

    outcome = delivery.attempt(row.pk)

    assert outcome == delivery.Outcome(Delivery.Status.RETRYING, 7.0)
    row.refresh_from_db()
    assert row.last_status_code is None and "ConnectionError" in row.last_error
    assert delivery.backoff(2) == 14.0 and delivery.backoff(20) == delivery.MAX_BACKOFF_SECONDS


def test_a_task_sent_twice_sends_each_attempt_once(
    receiver: Receiver, subscribe: Subscribe, failed: Deployment
) -> None:
    subscribe(Subscription.Channel.SLACK, receiver.url())
    row = emitted(failed)

    deliver.apply(args=[row.pk])
    deliver.apply(args=[row.pk])  # the sweep sent it again meanwhile

    assert len(receiver.received) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts, row.attempt_log.count()) == (Delivery.Status.DELIVERED, 1, 1)


def test_finished_deliveries_are_forgotten_after_thirty_days(
    subscribe: Subscribe, failed: Deployment
) -> None:
    hook = subscribe(Subscription.Channel.SLACK, "https://hooks.example.com/x")
    old = timezone.now() - timedelta(days=31)
    for status in (Delivery.Status.DELIVERED, Delivery.Status.FAILED, Delivery.Status.RETRYING):
        Delivery.objects.create(subscription=hook, event="failed", status=status, created_at=old)
    recent = Delivery.objects.create(
        subscription=hook, event="failed", status=Delivery.Status.DELIVERED
    )

    assert delivery.prune() == 2

    assert set(Delivery.objects.values_list("status", flat=True)) == {
        Delivery.Status.RETRYING,
        recent.status,
    }
