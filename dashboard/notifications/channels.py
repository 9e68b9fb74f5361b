"""Send a payload over a subscription's channel; each call is one attempt and says how it went.

Slack and Teams bodies are posted with ``requests``, not apprise: apprise's Slack plugin
builds its URL from tokens on hooks.slack.com (or slack-gov), and its Teams plugin
(``workflows://``) posts only over HTTPS to ``.../workflows/<id>/triggers/manual/paths/invoke``
on the host it is given, so neither posts to an arbitrary incoming-webhook URL (a
self-hosted Slack-compatible server, a relay, a receiver on loopback). The generic
webhook's signature covers the exact bytes sent, which apprise's ``json://`` builds
itself. Email goes through Django's mail and its EMAIL_* settings.
"""

from __future__ import annotations

import json
import smtplib
import time
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.core.mail import EmailMessage

from dashboard.api.hooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from dashboard.notifications.messages import Payload, email_text, slack_body, teams_body
from dashboard.notifications.models import Subscription

EVENT_HEADER = "X-Greenlight-Event"
DELIVERY_HEADER = "X-Greenlight-Delivery"
# Answers that say "later", unlike the rest of 4xx, which say the target or body is wrong.
RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Result:
    """One attempt: delivered or not, the HTTP status (if any), the error, and whether to retry."""

    ok: bool
    status_code: int | None = None
    error: str = ""
    # Trying again cannot help: the target refused the request itself (a 4xx, an address).
    permanent: bool = False


def post_json(url: str, body: bytes, headers: dict[str, str] | None = None) -> Result:
    """POST ``body`` as JSON to ``url`` without following redirects; 2xx is delivered."""
    try:
        response = requests.post(
            url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": "Greenlight-Notifications",
                **(headers or {}),
            },
            timeout=settings.NOTIFY_TIMEOUT_SECONDS,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return Result(False, error=f"{type(exc).__name__}: {exc}"[:1000])
    code = response.status_code
    if 200 <= code < 300:
        return Result(True, code)
    answer = " ".join(response.text.split())[:300]
    if 300 <= code < 400:
        where = response.headers.get("Location", "?")
        return Result(False, code, f"HTTP {code}: redirected to {where}; use that URL", True)
    permanent = 400 <= code < 500 and code not in RETRYABLE_4XX
    return Result(False, code, f"HTTP {code}: {answer}" if answer else f"HTTP {code}", permanent)


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def send_webhook(subscription: Subscription, payload: Payload, delivery_id: int) -> Result:
    """POST the payload, signed as the incoming generic webhook is (dashboard.api.hooks)."""
    body = _json({**payload, "delivery": delivery_id})
    stamp = str(int(time.time()))
    headers = {
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: signature(subscription.secret, body, stamp),
        EVENT_HEADER: payload["event"],
        DELIVERY_HEADER: str(delivery_id),
    }
    return post_json(subscription.target, body, headers)


def send_email(subscription: Subscription, payload: Payload) -> Result:
    """Mail the headline and the message, with the link, to every address of the target."""
    subject, text = email_text(payload)
    recipients = addresses(subscription.target)
    message = EmailMessage(subject, text, settings.DEFAULT_FROM_EMAIL, recipients)
    try:
        message.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(sorted(exc.recipients))
        return Result(False, error=f"the mail server refused {refused}", permanent=True)
    except (smtplib.SMTPException, OSError) as exc:
        return Result(False, error=f"{type(exc).__name__}: {exc}"[:1000])
    return Result(True)


def addresses(target: str) -> list[str]:
    """The addresses of an email target: comma- or space-separated."""
    return [part for part in target.replace(",", " ").split() if part]


def send(subscription: Subscription, payload: Payload, delivery_id: int) -> Result:
    """One attempt to deliver ``payload`` over the subscription's channel."""
    channel = subscription.channel
    if channel == Subscription.Channel.SLACK:
        return post_json(subscription.target, _json(slack_body(payload)))
    if channel == Subscription.Channel.TEAMS:
        return post_json(subscription.target, _json(teams_body(payload)))
    if channel == Subscription.Channel.EMAIL:
        return send_email(subscription, payload)
    if channel == Subscription.Channel.WEBHOOK:
        return send_webhook(subscription, payload, delivery_id)
    return Result(False, error=f"unknown channel {channel!r}", permanent=True)
