"""WebSocket routes of scaling (dashboard.routing serves them)."""

from __future__ import annotations

from django.urls import URLPattern, path

from scaling.consumers import ScalingRunLogConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/scaling/runs/<int:pk>/", ScalingRunLogConsumer.as_asgi()),
]
