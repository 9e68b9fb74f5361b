"""What a subscription must be, checked once for the page and the API: events, scope, target."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email

from dashboard.notifications.channels import addresses
from dashboard.notifications.models import Subscription
from deployer.events import EVENTS

# Events that belong to no app: only a subscription for every app hears them.
WITHOUT_APP = frozenset({"scaling_run_failed", "drain_stuck", "lb_refused_config"})
MAX_ADDRESSES = 20

_url = URLValidator(schemes=["http", "https"])


def clean_events(events: Any, app: Any) -> list[str]:
    """The event names, known and at least one, in EVENTS order; ValidationError naming the wrong ones."""
    if not isinstance(events, list | tuple) or not all(isinstance(e, str) for e in events):
        raise ValidationError("Send a list of event names.", code="invalid")
    if not events:
        raise ValidationError(f"Choose at least one event: {', '.join(EVENTS)}.", code="required")
    unknown = sorted({e for e in events if e not in EVENTS})
    if unknown:
        raise ValidationError(
            f"Unknown event {', '.join(repr(e[:40]) for e in unknown)}: choose from "
            f"{', '.join(EVENTS)}.",
            code="invalid_choice",
        )
    if app is not None:
        global_only = [e for e in EVENTS if e in events and e in WITHOUT_APP]
        if global_only:
            raise ValidationError(
                f"{', '.join(global_only)} belong{'s' if len(global_only) == 1 else ''} to no "
                "app; subscribe to them in a subscription for every app (no app chosen).",
                code="global_only",
            )
    return [e for e in EVENTS if e in events]


def clean_target(channel: str, target: str) -> str:
    """The target, stripped: an http(s) URL for the webhook channels, email addresses for email."""
    target = (target or "").strip()
    if not target:
        raise ValidationError("Enter where to deliver: a URL, or email addresses.", code="required")
    if channel in Subscription.URL_CHANNELS:
        try:
            _url(target)
        except ValidationError:
            raise ValidationError(
                f"Enter an http:// or https:// URL with a host, e.g. "
                f"https://hooks.example.com/services/T000/B000/XXXX; got {target[:100]!r}.",
                code="invalid_url",
            ) from None
        return target
    if channel == Subscription.Channel.EMAIL:
        found = addresses(target)
        if len(found) > MAX_ADDRESSES:
            raise ValidationError(
                f"At most {MAX_ADDRESSES} addresses; got {len(found)}.", code="too_many"
            )
        bad = []
        for address in found:
            try:
                validate_email(address)
            except ValidationError:
                bad.append(address[:100])
        if bad:
            raise ValidationError(
                f"Not an email address: {', '.join(bad)}. Separate addresses with commas, "
                "e.g. ops@example.com, dev@example.com.",
                code="invalid_email",
            )
        return ", ".join(found)
    raise ValidationError(
        f"Unknown channel {channel!r}: choose from {', '.join(Subscription.Channel.values)}.",
        code="invalid_choice",
    )
