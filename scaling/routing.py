"""WebSocket routes of scaling, added to dashboard.routing."""

from __future__ import annotations

from django.urls import URLPattern, path

from scaling.consumers import ScalingRunLogConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/scaling/runs/<int:pk>/", ScalingRunLogConsumer.as_asgi()),
]
