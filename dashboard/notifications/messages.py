"""What a delivery says: the payload built when an event is emitted, and each channel's body.

The payload is a snapshot (app, version, reason, the link to the live log), so a delivery
retried later says what happened then, not what the rows say now.
"""

from __future__ import annotations

from typing import Any, TypedDict

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from deployer.events import EVENTS


class Payload(TypedDict):
    """A delivery's content; the generic webhook sends it as JSON as it is."""

    event: str
    title: str
    message: str
    app: str | None
    version: int | None
    deployment: int | None
    scaling_run: int | None
    reason: str
    url: str
    at: str
    details: dict[str, Any]


def absolute(path: str) -> str:
    """``path`` on the dashboard's public address (settings.WEB_URL, GREENLIGHT_WEB_URL)."""
    return settings.WEB_URL.rstrip("/") + path


def _link(deployment: Any, scaling_run: Any) -> str:
    if deployment is not None:
        return absolute(reverse("deployment-detail", args=[deployment.pk]))
    if scaling_run is not None:
        return absolute(reverse("scaling:run-detail", args=[scaling_run.pk]))
    return absolute(reverse("load-balancer"))


def build_payload(
    event: str,
    message: str,
    *,
    app: Any = None,
    deployment: Any = None,
    scaling_run: Any = None,
    details: dict[str, Any] | None = None,
) -> Payload:
    """The payload of ``event`` as :func:`deployer.events.emit` announced it."""
    details = dict(details or {})
    reason = str(details.get("reason") or getattr(deployment, "failure_reason", "") or "")
    return Payload(
        event=event,
        title=EVENTS.get(event, event),
        message=message,
        app=None if app is None else str(getattr(app, "name", app)),
        version=getattr(deployment, "version", None),
        deployment=getattr(deployment, "pk", None),
        scaling_run=getattr(scaling_run, "pk", None),
        reason=reason,
        url=_link(deployment, scaling_run),
        at=timezone.now().isoformat(),
        details=details,
    )


def headline(payload: Payload) -> str:
    """One line: "Deploy failed: hello v3" (the subject of an email)."""
    what = payload["app"] or ""
    if what and payload["version"]:
        what += f" v{payload['version']}"
    return f"{payload['title']}: {what}" if what else payload["title"]


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads &, < and > as markup: https://api.slack.com/reference/surfaces/formatting
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(payload: Payload) -> dict[str, Any]:
    """A Slack-compatible incoming webhook body: ``{"text": ...}`` with the link in mrkdwn."""
    lines = [f"*{_slack_escape(headline(payload))}*", _slack_escape(payload["message"])]
    if payload["reason"] and payload["reason"] not in payload["message"]:
        lines.append(f"Reason: {_slack_escape(payload['reason'])}")
    lines.append(f"<{payload['url']}|Open the live log>")
    return {"text": "\n".join(lines)}


def _facts(payload: Payload) -> list[dict[str, str]]:
    facts = [("Event", payload["title"]), ("App", payload["app"] or "")]
    if payload["version"]:
        facts.append(("Version", f"v{payload['version']}"))
    if payload["reason"]:
        facts.append(("Reason", payload["reason"]))
    return [{"title": name, "value": value} for name, value in facts if value]


def teams_body(payload: Payload) -> dict[str, Any]:
    """A Teams incoming webhook (Workflows) message: one Adaptive Card with a link to the log."""
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": headline(payload),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            },
            {"type": "TextBlock", "text": payload["message"], "wrap": True},
            {"type": "FactSet", "facts": _facts(payload)},
        ],
        "actions": [
            {"type": "Action.OpenUrl", "title": "Open the live log", "url": payload["url"]}
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def email_text(payload: Payload) -> tuple[str, str]:
    """(subject, plain-text body) of the email."""
    lines = [payload["message"], ""]
    lines += [f"{fact['title']}: {fact['value']}" for fact in _facts(payload)]
    lines += ["", f"Live log: {payload['url']}"]
    return f"[Greenlight] {headline(payload)}", "\n".join(lines) + "\n"
