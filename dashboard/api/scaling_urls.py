"""REST routes of scaling, mounted at /api/scaling/ (namespace ``scaling-api``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import DefaultRouter

from dashboard.api import scaling as api

app_name = "scaling-api"

router = DefaultRouter()
router.register("runs", api.ScalingRunViewSet, basename="run")
router.register("schedules", api.ScheduleViewSet, basename="schedule")
router.register("node-groups", api.NodeGroupViewSet, basename="node-group")

urlpatterns: list[URLPattern | URLResolver] = [
    path("apps/<int:pk>/scale/", api.queue_app_scale, name="app-scale"),
    path("nodes/<str:name>/<str:verb>/", api.node_action, name="node-action"),
    *router.urls,
]
