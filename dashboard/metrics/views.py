"""``GET /metrics``: Greenlight's series for Prometheus, behind a bearer token."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from dashboard.metrics.collector import registry

DISABLED = (
    "The metrics endpoint is off. Set GREENLIGHT_METRICS_TOKEN to a random secret of at "
    "least 16 characters and have Prometheus send it as 'Authorization: Bearer <token>'.\n"
)
UNAUTHORIZED = (
    "A valid token is required: send 'Authorization: Bearer <GREENLIGHT_METRICS_TOKEN>'.\n"
)


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@login_not_required
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format; 404 while no token is configured, 401 without the right one."""
    expected = settings.METRICS_TOKEN
    if not expected:
        return HttpResponse(DISABLED, status=404, content_type="text/plain; charset=utf-8")
    given = bearer_token(request) or ""
    # Compared in constant time, as bytes: a token with non-ASCII characters is no error.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        response = HttpResponse(UNAUTHORIZED, status=401, content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="greenlight-metrics"'
        return response
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_PLAIN_0_0_4)
