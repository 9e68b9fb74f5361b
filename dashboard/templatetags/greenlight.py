"""Template filters: compact ages and durations, and the load balancer URL of a frontend."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from django import template
from django.conf import settings
from django.utils import timezone

from dashboard.images import repository

register = template.Library()


@register.filter
def ago(value: datetime | None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago'."""
    if value is None:
        return ""
    seconds = max(0, int((timezone.now() - value).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


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
