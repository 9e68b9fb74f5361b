"""Template context shared by every page."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def links(request: HttpRequest) -> dict[str, object]:
    """The load balancer URL, shown in the navigation."""
    return {"lb_url": settings.LB_URL}
