"""Django admin for scaling: schedules with their actions, node groups, runs (read-mostly)."""

from __future__ import annotations

from django.contrib import admin

from scaling.models import AppAction, NodeGroup, NodeGroupAction, ScalingRun, Schedule


class AppActionInline(admin.TabularInline):
    """App rows of a schedule."""

    model = AppAction
    extra = 0


class NodeGroupActionInline(admin.TabularInline):
    """Node group rows of a schedule."""

    model = NodeGroupAction
    extra = 0


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """Schedules; the dashboard's editor validates more (and previews)."""

    list_display = ("name", "enabled", "kind", "cron", "timezone", "revision")
    inlines = (AppActionInline, NodeGroupActionInline)


@admin.register(NodeGroup)
class NodeGroupAdmin(admin.ModelAdmin):
    """Node groups."""

    list_display = ("name", "provider", "min_size", "desired", "max_size", "baseline_desired")


@admin.register(ScalingRun)
class ScalingRunAdmin(admin.ModelAdmin):
    """Runs, for inspection."""

    list_display = ("pk", "kind", "status", "schedule", "due_at", "created_at")
    list_filter = ("kind", "status")
    readonly_fields = ("plan", "result", "params")
