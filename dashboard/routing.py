"""WebSocket routes; each app adds its consumers here."""

from __future__ import annotations

from django.urls import URLPattern, path

from dashboard.consumers import DeploymentLogConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/deployments/<int:pk>/", DeploymentLogConsumer.as_asgi()),
]

from scaling.routing import websocket_urlpatterns as scaling_websockets  # noqa: E402

websocket_urlpatterns += scaling_websockets
