"""WebSocket routes: the deployment log here, scaling's own routes after it."""

from __future__ import annotations

from django.urls import URLPattern, path

from dashboard.consumers import DeploymentLogConsumer
from dashboard.podlogs import PodLogConsumer
from scaling.routing import websocket_urlpatterns as scaling_websockets

websocket_urlpatterns: list[URLPattern] = [
    path("ws/deployments/<int:pk>/", DeploymentLogConsumer.as_asgi()),
    path("ws/apps/<int:pk>/pods/<str:pod>/logs/", PodLogConsumer.as_asgi()),
    *scaling_websockets,
]
