"""Serializers of the scaling REST API: what it answers, and the shapes of what it accepts.

Bodies that change schedules and node groups are checked here for their JSON shape
only (types, required keys, numbers a database column holds); the rules are the
editor's forms', applied by ``scaling.editor`` and ``scaling.forms``.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Any, ClassVar

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.reverse import reverse

from dashboard.api.serializers import LogLineSerializer, LogPageSerializer
from deployer.livelog import MAX_DB_INT
from scaling.models import (
    AppAction,
    NodeGroup,
    NodeGroupAction,
    ScalingRun,
    ScalingRunLog,
    Schedule,
)
from scaling.planner import schedule_problem
from scaling.preview import preview_schedule

_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")
CLOCK_SCHEMA = {
    "type": "string",
    "pattern": _CLOCK.pattern,
    "example": "21:00",
    "description": "A wall-clock time in the schedule's time zone, HH:MM (or HH:MM:SS).",
}


@extend_schema_field({**CLOCK_SCHEMA, "nullable": True})
class ClockField(serializers.Field):
    """A time of day without a zone or date, as ``HH:MM`` (``HH:MM:SS`` when it has seconds)."""

    default_error_messages = {"invalid": "Enter a time as HH:MM, e.g. 21:00."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        """The text as given, once it reads as a time of day (the form parses it)."""
        if not isinstance(data, str) or not _CLOCK.match(data):
            self.fail("invalid")
        return data

    def to_representation(self, value: time) -> str:
        """HH:MM, with seconds only when there are any."""
        return value.strftime("%H:%M:%S" if value.second else "%H:%M")


class LinkedSerializer(serializers.ModelSerializer):
    """A model serializer whose ``url`` is the object's URL in the API (``detail_view``).

    Subclasses declare ``url``, with the words the schema shows for it.
    """

    detail_view: ClassVar[str]

    def get_url(self, instance: Any) -> str:
        """The object's API URL."""
        return reverse(self.detail_view, args=[instance.pk], request=self.context.get("request"))


class ScalingRunSerializer(LinkedSerializer):
    """A run: what was planned, what happened, where its log is."""

    detail_view = "scaling-api:run-detail"
    url = serializers.SerializerMethodField(help_text="The run's API URL.")
    logs_url = serializers.SerializerMethodField()

    class Meta:
        model = ScalingRun
        fields = [
            "id", "url", "logs_url", "kind", "status", "schedule", "due_at", "event",
            "params", "plan", "result", "created_at", "started_at", "finished_at",
            "failure_reason",
        ]  # fmt: skip

    def get_logs_url(self, run: ScalingRun) -> str:
        """The run's log lines."""
        return reverse("scaling-api:run-logs", args=[run.pk], request=self.context.get("request"))


class RunFilterSerializer(serializers.Serializer):
    """Query of the run list."""

    kind = serializers.ChoiceField(choices=ScalingRun.Kind.choices, required=False)
    status = serializers.ChoiceField(choices=ScalingRun.Status.choices, required=False)


class RunLogLineSerializer(LogLineSerializer):
    """One stored line of a run's log."""

    class Meta(LogLineSerializer.Meta):
        model = ScalingRunLog


class RunLogPageSerializer(LogPageSerializer):
    """Stored lines after ``after``; ask again with ``after=last_seq`` while ``has_more``."""

    results = RunLogLineSerializer(many=True)
    status = serializers.ChoiceField(choices=ScalingRun.Status.choices)


class WholeRowSerializer(serializers.ModelSerializer):
    """A row of a list that replaces the stored rows: whole even inside a PATCH."""

    def to_internal_value(self, data: Any) -> Any:
        """The row's values, its defaults filled in; every required field named when missing."""
        values = super().to_internal_value(data)
        missing: dict[str, list[str]] = {}
        for name, row_field in self.fields.items():
            if row_field.read_only or row_field.source in values:
                continue
            if row_field.required:
                missing[name] = [str(row_field.error_messages["required"])]
            elif row_field.default is not empty:
                default = row_field.default
                values[row_field.source] = default() if callable(default) else default
        if missing:
            raise serializers.ValidationError(missing)
        return values


class AppActionSerializer(WholeRowSerializer):
    """An app row of a schedule: replicas as a number or a percentage of the baseline."""

    app = serializers.IntegerField(
        source="app_id", min_value=1, max_value=MAX_DB_INT, help_text="The app's id."
    )
    app_name = serializers.CharField(source="app.name", read_only=True)
    mode = serializers.ChoiceField(choices=AppAction.Mode.choices, default=AppAction.Mode.PERCENT)
    value = serializers.IntegerField(
        min_value=0,
        max_value=MAX_DB_INT,
        default=100,
        help_text="Replicas (absolute), or a percentage (0-1000) of the app's baseline.",
    )
    floor = serializers.IntegerField(
        min_value=0, max_value=MAX_DB_INT, default=1, help_text="At least this many replicas."
    )

    class Meta:
        model = AppAction
        fields = ["app", "app_name", "mode", "value", "floor"]


class NodeGroupActionSerializer(WholeRowSerializer):
    """A node group row of a schedule: the number of nodes it should have."""

    node_group = serializers.IntegerField(
        source="node_group_id", min_value=1, max_value=MAX_DB_INT, help_text="The node group's id."
    )
    node_group_name = serializers.CharField(source="node_group.name", read_only=True)
    desired = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT)

    class Meta:
        model = NodeGroupAction
        fields = ["node_group", "node_group_name", "desired"]


class NextRunSerializer(serializers.Serializer):
    """One upcoming run, as the editor previews it."""

    local = serializers.CharField(help_text="In the schedule's zone, with its abbreviation.")
    utc = serializers.CharField(help_text="The same moment in UTC.")
    event = serializers.CharField(help_text="apply, or restore at a window's end.")
    note = serializers.CharField(help_text="A daylight-saving note, or empty.")


class ScheduleSerializer(LinkedSerializer):
    """A schedule, its actions and its next runs; the body of create (POST) and edit (PUT, PATCH).

    The editor's rules apply: a cron expression whose next 5 runs exist, or weekdays
    with a start time; a known time zone; at least one action, each app and node group
    once. Lists of actions replace the stored ones.
    """

    detail_view = "scaling-api:schedule-detail"
    url = serializers.SerializerMethodField(help_text="The schedule's API URL.")
    enabled = serializers.BooleanField(default=True)
    kind = serializers.ChoiceField(choices=Schedule.Kind.choices, default=Schedule.Kind.CRON)
    cron = serializers.CharField(
        max_length=100,
        allow_blank=True,
        required=False,
        help_text="minute hour day-of-month month day-of-week (kind cron).",
    )
    days = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=6),
        required=False,
        help_text="Weekdays, Monday = 0 (kind weekly).",
    )
    at_time = ClockField(help_text="When it starts (kind weekly).")
    until_time = ClockField(help_text="When a window ends; empty: not a window.")
    timezone = serializers.CharField(max_length=64, default="UTC", help_text="An IANA zone.")
    app_actions = AppActionSerializer(many=True, required=False)
    node_group_actions = NodeGroupActionSerializer(many=True, required=False)
    next_runs = serializers.SerializerMethodField()
    problem = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = [
            "id", "url", "name", "enabled", "kind", "cron", "days", "at_time", "until_time",
            "timezone", "revision", "app_actions", "node_group_actions", "next_runs", "problem",
        ]  # fmt: skip
        read_only_fields = ["revision"]
        # Uniqueness is the form's to check, with its message.
        extra_kwargs = {"name": {"validators": []}}

    @extend_schema_field(NextRunSerializer(many=True))
    def get_next_runs(self, schedule: Schedule) -> list[dict[str, str]]:
        """The next 5 runs (local and UTC, with DST notes); none when it cannot run."""
        return [dict(row) for row in preview_schedule(schedule)[0]]

    def get_problem(self, schedule: Schedule) -> str:
        """Why the schedule cannot run (a row saved outside the editor, a zone gone), or ""."""
        return schedule_problem(schedule)

    def to_representation(self, instance: Schedule) -> dict[str, Any]:
        """The schedule; days stored outside the editor that are not weekdays read as none."""
        days = instance.days
        if not (isinstance(days, list) and all(type(d) is int and 0 <= d < 7 for d in days)):
            instance.days = []
        data = super().to_representation(instance)
        instance.days = days
        return data


class NodeGroupSerializer(LinkedSerializer):
    """A node group and its limits; the body of create (POST) and edit (PUT, PATCH)."""

    detail_view = "scaling-api:node-group-detail"
    url = serializers.SerializerMethodField(help_text="The node group's API URL.")
    provider = serializers.ChoiceField(
        choices=NodeGroup.Provider.choices, default=NodeGroup.Provider.LOCAL
    )
    external_name = serializers.CharField(
        max_length=255, allow_blank=True, required=False, help_text="AWS: the Auto Scaling group."
    )
    region = serializers.CharField(
        max_length=32, allow_blank=True, required=False, help_text="AWS: its region."
    )
    min_size = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT, default=0)
    max_size = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT, default=10)
    desired = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT, default=1)

    class Meta:
        model = NodeGroup
        fields = [
            "id", "url", "name", "provider", "external_name", "region", "min_size", "max_size",
            "desired", "baseline_desired",
        ]  # fmt: skip
        read_only_fields = ["baseline_desired"]
        extra_kwargs = {"name": {"validators": []}}


class ScalingCapacityRequest(serializers.Serializer):
    """Body of ``capacity``."""

    desired = serializers.IntegerField(min_value=0)


class ScalingScaleRequest(serializers.Serializer):
    """Body of an app's ``scale``."""

    replicas = serializers.IntegerField(min_value=0)
    baseline = serializers.BooleanField(required=False, default=False)


class ScalingNodeActionRequest(serializers.Serializer):
    """Body of a node action (only ``drain`` reads it)."""

    force = serializers.BooleanField(required=False, default=False)
    deadline = serializers.IntegerField(required=False, min_value=5, max_value=3600)
