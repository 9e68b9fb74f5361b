"""Routes of the scaling pages, mounted under /scaling/."""

from __future__ import annotations

from django.urls import URLPattern, path

from scaling.views import cluster, runs, schedules

app_name = "scaling"

urlpatterns: list[URLPattern] = [
    path("", schedules.overview, name="overview"),
    path("schedules/new/", schedules.schedule_create, name="schedule-create"),
    path("schedules/preview/", schedules.schedule_preview, name="schedule-preview"),
    path("schedules/<int:pk>/", schedules.schedule_edit, name="schedule-edit"),
    path("schedules/<int:pk>/delete/", schedules.schedule_delete, name="schedule-delete"),
    path("schedules/<int:pk>/dry-run/", schedules.schedule_dry_run, name="schedule-dry-run"),
    path("cluster/", cluster.cluster, name="cluster"),
    path("node-groups/new/", cluster.node_group_form, name="node-group-create"),
    path("node-groups/<int:pk>/", cluster.node_group_form, name="node-group-edit"),
    path("node-groups/<int:pk>/capacity/", cluster.node_group_capacity, name="node-group-capacity"),
    path("node-groups/<int:pk>/delete/", cluster.node_group_delete, name="node-group-delete"),
    path("apps/<int:pk>/scale/", cluster.queue_app_scale, name="app-scale"),
    path("nodes/<str:name>/<str:action>/", cluster.node_action, name="node-action"),
    path("runs/", runs.run_list, name="run-list"),
    path("runs/<int:pk>/", runs.run_detail, name="run-detail"),
    path("runs/<int:pk>/logs/", runs.run_logs, name="run-logs"),
]
