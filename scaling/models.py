"""Schedules, node groups and scaling runs."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from deployer.models import App, Lifecycle, LogLine


class NodeGroup(models.Model):
    """A set of interchangeable nodes whose size a cloud provider (or localcluster) controls."""

    class Provider(models.TextChoices):
        AWS = "aws", "AWS Auto Scaling group"
        LOCAL = "local", "localcluster"

    name = models.CharField(max_length=63, unique=True)
    provider = models.CharField(max_length=8, choices=Provider.choices, default=Provider.LOCAL)
    # The Auto Scaling group's name; the node group's name when blank.
    external_name = models.CharField(max_length=255, blank=True, default="")
    region = models.CharField(max_length=32, blank=True, default="")
    min_size = models.PositiveIntegerField(default=0)
    max_size = models.PositiveIntegerField(default=10)
    desired = models.PositiveIntegerField(default=1)
    # The capacity a schedule window restores when it ends; remembered at the first scaling.
    baseline_desired = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(min_size__lte=models.F("max_size")), name="nodegroup_min_le_max"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def provider_name(self) -> str:
        """The name the provider knows the group by."""
        return self.external_name or self.name

    def clamp(self, desired: int) -> int:
        """``desired`` bounded by the group's min and max size."""
        return max(self.min_size, min(self.max_size, desired))


class Schedule(models.Model):
    """When to scale what: a cron expression or weekly days (and an optional window end)."""

    class Kind(models.TextChoices):
        CRON = "cron", "Cron expression"
        WEEKLY = "weekly", "Weekly days and time"

    DAY_NAMES: ClassVar[tuple[str, ...]] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

    name = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.CRON)
    cron = models.CharField(max_length=100, blank=True, default="")
    # Weekdays as integers, Monday = 0, as datetime.weekday() counts them.
    days = models.JSONField(default=list, blank=True)
    at_time = models.TimeField(null=True, blank=True)
    # When set, the schedule is a window: it ends at this time (the next day if not after
    # at_time) and the apps and node groups it touched go back to their baseline.
    until_time = models.TimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    # Bumped at every save from the editor: the latest due time is applied again, as edited.
    revision = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def describe(self) -> str:
        """A one-line human description of when the schedule fires."""
        if self.kind == self.Kind.CRON:
            return f"cron “{self.cron}” ({self.timezone})"
        # Days edited outside the editor may be anything; show them rather than fail the page.
        days = self.days if isinstance(self.days, list) else [self.days]
        valid = all(isinstance(d, int) and 0 <= d < 7 for d in days)
        names = (
            ", ".join(self.DAY_NAMES[d] for d in sorted(days)) if valid else repr(self.days)
        ) or "no days"
        start = self.at_time.strftime("%H:%M") if self.at_time else "?"
        if self.until_time is not None:
            return f"{names} {start}–{self.until_time.strftime('%H:%M')} ({self.timezone})"
        return f"{names} at {start} ({self.timezone})"


class AppAction(models.Model):
    """A schedule's target for one app: absolute replicas or a percentage of its baseline."""

    class Mode(models.TextChoices):
        ABSOLUTE = "absolute", "replicas"
        PERCENT = "percent", "% of baseline"

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="app_actions")
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="+")
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.PERCENT)
    value = models.PositiveIntegerField(default=100)
    # The fewest replicas a percentage may produce.
    floor = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "app"], name="appaction_one_per_app"),
        ]

    def __str__(self) -> str:
        unit = "%" if self.mode == self.Mode.PERCENT else " replicas"
        return f"{self.app.name} → {self.value}{unit}"


class NodeGroupAction(models.Model):
    """A schedule's target for one node group: its desired capacity."""

    schedule = models.ForeignKey(
        Schedule, on_delete=models.CASCADE, related_name="node_group_actions"
    )
    node_group = models.ForeignKey(NodeGroup, on_delete=models.CASCADE, related_name="+")
    desired = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "node_group"], name="nodegroupaction_one_per_group"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node_group.name} → {self.desired} nodes"


class ScalingRun(Lifecycle, models.Model):
    """One scaling job (a schedule's due time, a dry run or a manual action) and its outcome."""

    class Kind(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        DRY_RUN = "dry_run", "Dry run"
        SCALE_APP = "scale_app", "Scale app"
        CORDON = "cordon", "Cordon node"
        UNCORDON = "uncordon", "Uncordon node"
        DRAIN = "drain", "Drain node"
        SET_CAPACITY = "set_capacity", "Set node group capacity"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    TERMINAL: ClassVar[frozenset[str]] = frozenset({Status.SUCCEEDED, Status.FAILED})
    noun: ClassVar[str] = "scaling run"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    schedule = models.ForeignKey(
        Schedule, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    # The schedule's due time this run applies (UTC); with the schedule and its revision,
    # the idempotence key: each due time of each version of a schedule is applied once.
    due_at = models.DateTimeField(null=True, blank=True)
    revision = models.PositiveIntegerField(default=1)
    # "apply" or "restore" for schedule runs (a window's end restores baselines).
    event = models.CharField(max_length=8, blank=True, default="")
    params = models.JSONField(default=dict, blank=True)
    # Planned changes: [{"target": "app"|"node_group", "id", "name", "from", "to", "why"}].
    plan = models.JSONField(default=list, blank=True)
    result = models.JSONField(default=list, blank=True)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set at every status change: a run WAITING or RUNNING without change for long was lost.
    updated_at = models.DateTimeField(default=timezone.now)
    # Made anew by each start: a worker acts on the run only while the row holds its claim,
    # so a run resumed elsewhere (scaling.services.requeue_stale) stops where it was.
    claim = models.CharField(max_length=32, blank=True, default="")
    failure_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "due_at", "revision"],
                condition=Q(kind="schedule"),
                name="scalingrun_once_per_due_time_and_revision",
            ),
        ]

    def __str__(self) -> str:
        return f"scaling run #{self.pk} ({self.kind})"

    def title(self) -> str:
        """A short description for lists and headings."""
        if self.kind == self.Kind.SCHEDULE and self.schedule is not None:
            suffix = " (window end)" if self.event == "restore" else ""
            return f"Schedule “{self.schedule.name}”{suffix}"
        if self.kind == self.Kind.DRY_RUN and self.schedule is not None:
            return f"Dry run of “{self.schedule.name}”"
        target = self.params.get("node") or self.params.get("app") or self.params.get("group")
        label = str(self.Kind(self.kind).label)
        return f"{label} {target}" if target else label

    def _fence(self) -> dict[str, Any]:
        # A move out of RUNNING is this worker's only while its claim holds.
        return {"claim": self.claim} if self.status == self.Status.RUNNING else {}

    def _move(self, allowed_from: set[str], to: str, **fields: Any) -> None:
        fields.setdefault("updated_at", timezone.now())
        super()._move(allowed_from, to, **fields)

    def start(self, now: datetime | None = None) -> None:
        """QUEUED or WAITING -> RUNNING under a new claim, with a conditional update."""
        fields: dict[str, Any] = {"claim": secrets.token_hex(8)}
        if self.started_at is None:
            fields["started_at"] = now or timezone.now()
        self._move({self.Status.QUEUED, self.Status.WAITING}, self.Status.RUNNING, **fields)

    def still_claimed(self) -> bool:
        """Whether the row is still RUNNING under this object's claim (one query)."""
        return (
            type(self)
            .objects.filter(pk=self.pk, status=self.Status.RUNNING, claim=self.claim)
            .exists()
        )

    def wait(self) -> None:
        """RUNNING -> WAITING: the run yields until something it depends on finishes."""
        self._move({self.Status.RUNNING}, self.Status.WAITING)

    def succeed(self, now: datetime | None = None) -> None:
        """RUNNING -> SUCCEEDED."""
        self._move({self.Status.RUNNING}, self.Status.SUCCEEDED, finished_at=now or timezone.now())

    def fail(self, reason: str, now: datetime | None = None) -> None:
        """Any non-terminal status -> FAILED with the reason."""
        self._move(
            {self.Status.QUEUED, self.Status.RUNNING, self.Status.WAITING},
            self.Status.FAILED,
            finished_at=now or timezone.now(),
            failure_reason=reason,
        )


class ScalingRunLog(LogLine):
    """One line of a scaling run's log, in order of ``seq``."""

    owner_field = "run"
    run = models.ForeignKey(ScalingRun, on_delete=models.CASCADE, related_name="logs")

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="scalingrunlog_unique_seq"),
        ]
