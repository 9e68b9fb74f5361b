"""Template filters and tags: compact ages and durations, the load balancer URL of a frontend, form fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django import template
from django.conf import settings
from django.utils import timezone

from dashboard.images import repository
from deployer.promotion import span

register = template.Library()

# The largest unit an age has at least one of names it: days, hours, minutes, else seconds.
_AGO_UNITS = ((86400, "d"), (3600, "h"), (60, "min"))


@register.filter
def ago(value: datetime | None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago'."""
    if value is None:
        return ""
    seconds = max(0, int((timezone.now() - value).total_seconds()))
    for size, unit in _AGO_UNITS:
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


@register.filter
def duration(value: float | None) -> str:
    """'4 ms', '1.8 s', '42 s', '3 min 5 s', or '' when unknown."""
    if value is None:
        return ""
    if value < 1:
        return f"{round(value * 1000)} ms"
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{round(value)} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s"


@register.filter
def wait(seconds: float | None) -> str:
    """A wait as a person says it: '45 s', '10 min', '2 h 30 min', '7 d'; '' when unknown."""
    return "" if seconds is None else span(float(seconds))


@register.filter
def frontend_url(hostname: str) -> str:
    """The URL of ``hostname`` through the load balancer (its scheme and port)."""
    lb = urlsplit(settings.LB_URL)
    default = {"http": 80, "https": 443}.get(lb.scheme)
    port = f":{lb.port}" if lb.port and lb.port != default else ""
    return f"{lb.scheme}://{hostname}{port}/"


@register.filter(name="repository")
def repository_filter(image: str) -> str:
    """The image's repository without tag or digest."""
    return repository(image)


@register.inclusion_tag("dashboard/_fields.html")
def fields(form: Any, names: str) -> dict[str, Any]:
    """Render each field ``names`` lists (spaces between; a trailing ``+`` makes it full width)."""
    return {"fields": [(form[name.rstrip("+")], name.endswith("+")) for name in names.split()]}
