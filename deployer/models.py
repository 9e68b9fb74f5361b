"""App descriptors, deployments and their logs."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models.fields.json import KT
from django.utils import timezone

from deployer.follow import (
    FOLLOW_INTERVAL_DEFAULT,
    validate_follow_interval,
    validate_follow_policy,
)
from deployer.validation import validate_app


class IllegalTransition(Exception):
    """A status change that the state machine does not allow."""


class Lifecycle:
    """Status transitions claimed with a conditional update, for deployments and scaling runs.

    Subclasses are models with ``status``, ``started_at`` and ``finished_at`` fields, a
    ``TERMINAL`` set and a ``noun`` naming them in error messages.
    """

    TERMINAL: ClassVar[frozenset[str]]
    noun: ClassVar[str]
    pk: Any
    status: str
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def is_terminal(self) -> bool:
        """True once the row can no longer change status."""
        return self.status in self.TERMINAL

    @property
    def duration_seconds(self) -> float | None:
        """Wall time from start to finish, or None while unfinished."""
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def _fence(self) -> dict[str, Any]:
        """Fields whose stored values must still be the ones this object holds for a move."""
        return {}

    def _move(self, allowed_from: set[str], to: str, **fields: Any) -> None:
        """Move to ``to`` from one of ``allowed_from``, setting ``fields``; refuse illegal or raced moves."""
        if self.status not in allowed_from:
            raise IllegalTransition(f"{self.noun} #{self.pk}: cannot go from {self.status} to {to}")
        manager = type(self)._default_manager  # type: ignore[attr-defined]
        updated = manager.filter(pk=self.pk, status=self.status, **self._fence()).update(
            status=to, **fields
        )
        if updated != 1:
            self.refresh_from_db()  # type: ignore[attr-defined]
            raise IllegalTransition(
                f"{self.noun} #{self.pk}: status changed concurrently to {self.status}"
            )
        self.status = to
        for key, value in fields.items():
            setattr(self, key, value)


def _webhook_secret() -> str:
    return secrets.token_urlsafe(24)


class App(models.Model):
    """An application descriptor: what to run, how many, where its traffic comes from."""

    # The fields a user sets (forms, the REST API); everything else is kept by Greenlight.
    DESCRIPTOR_FIELDS: ClassVar[tuple[str, ...]] = (
        "name",
        "namespace",
        "image",
        "replicas",
        "frontend",
        "container_port",
        "health_enabled",
        "health_type",
        "health_path",
        "health_port",
        "health_timeout",
        "health_deadline",
        "cpu_request",
        "cpu_limit",
        "memory_request",
        "memory_limit",
        "env",
        "extra_pod_spec",
        "keep_old_seconds",
        "stop_delay_seconds",
        "max_unavailable",
        "traffic",
        "promotion",
        "promotion_timeout_seconds",
        "pre_switch_hook",
        "pre_switch_hook_timeout_seconds",
        "guard_bake_seconds",
        "guard_max_error_percent",
        "guard_min_requests",
        "guard_max_response_ms",
        "guard_promql",
        "follow_policy",
        "follow_interval_seconds",
    )

    class HealthType(models.TextChoices):
        HTTP_JSON = "http-json", "HTTP, JSON body with healthy: true"
        HTTP_STATUS = "http-status", "HTTP status 2xx"

    class Traffic(models.TextChoices):
        HAPROXY = "haproxy", "HAProxy routes to the version's pods"
        SERVICE = "service", "A stable Service's selector moves to the version"

    class Promotion(models.TextChoices):
        AUTOMATIC = "automatic", "Switch as soon as every pod is healthy"
        MANUAL = "manual", "Wait for Promote or Reject after the health checks"

    name = models.CharField(max_length=53)
    namespace = models.CharField(max_length=63, default="default")
    image = models.CharField(max_length=255)
    replicas = models.PositiveIntegerField(default=2)
    frontend = models.CharField(max_length=253, unique=True)
    container_port = models.PositiveIntegerField(default=8080)

    health_enabled = models.BooleanField(default=True)
    health_type = models.CharField(
        max_length=16, choices=HealthType.choices, default=HealthType.HTTP_JSON
    )
    health_path = models.CharField(max_length=255, default="/health")
    health_port = models.PositiveIntegerField(null=True, blank=True)
    health_timeout = models.FloatField(default=2.0)
    health_deadline = models.PositiveIntegerField(default=120)

    cpu_request = models.CharField(max_length=32, blank=True, default="50m")
    cpu_limit = models.CharField(max_length=32, blank=True, default="")
    memory_request = models.CharField(max_length=32, blank=True, default="32Mi")
    memory_limit = models.CharField(max_length=32, blank=True, default="")
    env = models.JSONField(default=dict, blank=True)
    extra_pod_spec = models.JSONField(default=dict, blank=True)
    keep_old_seconds = models.PositiveIntegerField(default=0)
    # preStop sleep of every pod: load balancers stop sending before SIGTERM arrives.
    stop_delay_seconds = models.PositiveIntegerField(default=5)
    # The PodDisruptionBudget of each live version: pods a drain may take down at once.
    max_unavailable = models.PositiveIntegerField(default=1)
    # How the switch moves traffic (deployer.traffic): the load balancer's backend, or the
    # selector of the app's stable Service, which the load balancer then routes to.
    traffic = models.CharField(max_length=16, choices=Traffic.choices, default=Traffic.HAPROXY)
    # Manual promotion: a deploy waits after its health checks for Promote or Reject, at
    # most this long (then it is rejected).
    promotion = models.CharField(
        max_length=16, choices=Promotion.choices, default=Promotion.AUTOMATIC
    )
    promotion_timeout_seconds = models.PositiveIntegerField(default=3600)
    # A command run in the new version's image, as a Job, after the health checks and
    # before the switch (deployer.hooks): shell words, "" for none. A failure rolls back.
    pre_switch_hook = models.CharField(max_length=1024, blank=True, default="")
    pre_switch_hook_timeout_seconds = models.PositiveIntegerField(default=300)
    # The guard after the switch (deployer.guard): for the bake time the new version's
    # 5xx ratio and response time are compared with these thresholds; a breach swaps back.
    guard_bake_seconds = models.PositiveIntegerField(default=60)
    guard_max_error_percent = models.FloatField(default=5.0)
    guard_min_requests = models.PositiveIntegerField(default=20)
    guard_max_response_ms = models.PositiveIntegerField(null=True, blank=True)
    # Optional PromQL, evaluated against settings.GREENLIGHT_PROMETHEUS_URL during the bake.
    guard_promql = models.TextField(blank=True, default="")
    # Registry polling (deployer.follow): off, semver-patch|minor|major, or a glob of tags.
    follow_policy = models.CharField(
        max_length=128, default="off", validators=[validate_follow_policy]
    )
    follow_interval_seconds = models.PositiveIntegerField(
        default=FOLLOW_INTERVAL_DEFAULT, validators=[validate_follow_interval]
    )
    # Kept by the poller: when it asked, when it asks next, what it saw, and its last error.
    follow_last_poll = models.DateTimeField(null=True, blank=True)
    follow_next_poll = models.DateTimeField(null=True, blank=True)
    follow_newest_tag = models.CharField(max_length=128, blank=True, default="")
    follow_last_error = models.TextField(blank=True, default="")
    follow_failures = models.PositiveIntegerField(default=0)

    # The version receiving traffic, set by the workflow at the switch; None when undeployed.
    live_version = models.PositiveIntegerField(null=True, blank=True)

    # The replica count that percentage scaling schedules are relative to.
    baseline_replicas = models.PositiveIntegerField(null=True, blank=True)

    webhook_secret = models.CharField(max_length=64, unique=True, default=_webhook_secret)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="app_unique_name_per_ns"),
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def clean(self) -> None:
        """Validate every field with deployer.validation; raises field-keyed ValidationError."""
        validate_app(self)

    @classmethod
    def serving_at(cls, hostname: str) -> App | None:
        """The live app whose last switch routed ``hostname`` (it owns the name until it moves)."""
        switched = (
            Deployment.objects.filter(app=models.OuterRef("pk"), switched_at__isnull=False)
            .order_by("-switched_at")
            .values(host=KT("descriptor__frontend"))[:1]
        )
        return (
            cls.objects.filter(live_version__isnull=False)
            .annotate(routed=models.Subquery(switched))
            .filter(routed__iexact=hostname)
            .first()
        )

    @property
    def effective_health_port(self) -> int:
        """The port health checks use: the health port, else the container port."""
        return self.health_port or self.container_port

    def snapshot(self) -> dict[str, Any]:
        """The descriptor as plain JSON, frozen into each deployment."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "image": self.image,
            "replicas": self.replicas,
            "frontend": self.frontend,
            "container_port": self.container_port,
            "health": {
                "enabled": self.health_enabled,
                "type": self.health_type,
                "path": self.health_path,
                "port": self.effective_health_port,
                "timeout": self.health_timeout,
                "deadline": self.health_deadline,
            },
            "resources": {
                "requests": {
                    k: v
                    for k, v in (("cpu", self.cpu_request), ("memory", self.memory_request))
                    if v
                },
                "limits": {
                    k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v
                },
            },
            "env": dict(self.env),
            "extra_pod_spec": dict(self.extra_pod_spec),
            "keep_old_seconds": self.keep_old_seconds,
            "stop_delay_seconds": self.stop_delay_seconds,
            "max_unavailable": self.max_unavailable,
            "traffic": self.traffic,
            "promotion": {"mode": self.promotion, "timeout": self.promotion_timeout_seconds},
            "pre_switch_hook": {
                "command": self.pre_switch_hook,
                "timeout": self.pre_switch_hook_timeout_seconds,
            },
            "guard": {
                "bake_seconds": self.guard_bake_seconds,
                "max_error_percent": self.guard_max_error_percent,
                "min_requests": self.guard_min_requests,
                "max_response_ms": self.guard_max_response_ms,
                "promql": self.guard_promql,
            },
        }


class Deployment(Lifecycle, models.Model):
    """One run of the blue-green workflow for an app."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        AWAITING_PROMOTION = "awaiting_promotion", "Awaiting promotion"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        ABORTED = "aborted", "Aborted"

    TERMINAL: ClassVar[frozenset[str]] = frozenset(
        {Status.SUCCEEDED, Status.FAILED, Status.ABORTED}
    )
    # Waiting or running: at most one of an app runs at a time, the others wait for it.
    ACTIVE: ClassVar[tuple[str, ...]] = (
        Status.QUEUED,
        Status.RUNNING,
        Status.AWAITING_PROMOTION,
    )
    # Claimed by a worker that runs it (and beats for it): RUNNING, or waiting, still run by
    # that worker, for Promote or Reject (deployer.promotion).
    IN_PROGRESS: ClassVar[tuple[str, ...]] = (Status.RUNNING, Status.AWAITING_PROMOTION)
    noun: ClassVar[str] = "deployment"

    class Decision(models.TextChoices):
        PROMOTE = "promote", "Promote"
        REJECT = "reject", "Reject"

    class Trigger(models.TextChoices):
        UI = "ui", "Dashboard"
        API = "api", "REST API"
        WEBHOOK = "webhook", "Webhook"
        SCHEDULE = "schedule", "Schedule"
        REGISTRY = "registry", "Registry poll"

    class Kind(models.TextChoices):
        DEPLOY = "deploy", "Deploy"
        SWAP_BACK = "swap-back", "Swap back"
        UNDEPLOY = "undeploy", "Undeploy"

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="deployments")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.DEPLOY)
    version = models.PositiveIntegerField(null=True, blank=True)
    image = models.CharField(max_length=255)
    descriptor = models.JSONField(default=dict)
    status = models.CharField(
        max_length=24, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.UI)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    trigger_detail = models.CharField(max_length=255, blank=True, default="")
    abort_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True, default="")
    health_results = models.JSONField(default=list, blank=True)
    # Step name -> {"state": pending|running|done|failed, "started": iso, "seconds": float}
    steps = models.JSONField(default=dict, blank=True)
    previous_version = models.PositiveIntegerField(null=True, blank=True)
    # Set when etcd was switched to this version: failures after it swap back, not just clean up.
    switched_at = models.DateTimeField(null=True, blank=True)
    # Refreshed every few seconds by the worker running it: a stale one means that worker is lost.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When its run task last reached the broker; None while no send has succeeded.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # Manual promotion: when the run started waiting, and the decision asked for
    # ("promote" or "reject"), by whom.
    awaiting_since = models.DateTimeField(null=True, blank=True)
    promotion_decision = models.CharField(max_length=8, blank=True, default="")
    promotion_decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The guard's last reading of both versions (deployer.guard), shown on the page.
    guard = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["app", "-created_at"])]

    def __str__(self) -> str:
        return f"deployment #{self.pk} of {self.app_id}"

    def start(self, worker: str = "") -> None:
        """QUEUED -> RUNNING, claimed with a conditional update; the first heartbeat is now."""
        now = timezone.now()
        self._move(
            {self.Status.QUEUED},
            self.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            worker=worker,
        )

    def succeed(self) -> None:
        """RUNNING -> SUCCEEDED."""
        self._move({self.Status.RUNNING}, self.Status.SUCCEEDED, finished_at=timezone.now())

    def fail(self, reason: str) -> None:
        """QUEUED, RUNNING or AWAITING_PROMOTION -> FAILED with the reason."""
        self._move(
            {self.Status.QUEUED, *self.IN_PROGRESS},
            self.Status.FAILED,
            finished_at=timezone.now(),
            failure_reason=reason,
        )

    def abort(self, reason: str = "aborted by user") -> None:
        """QUEUED, RUNNING or AWAITING_PROMOTION -> ABORTED with the reason."""
        self._move(
            {self.Status.QUEUED, *self.IN_PROGRESS},
            self.Status.ABORTED,
            finished_at=timezone.now(),
            failure_reason=reason,
        )

    def await_promotion(self) -> None:
        """RUNNING -> AWAITING_PROMOTION: the run waits for Promote or Reject from now."""
        self._move(
            {self.Status.RUNNING},
            self.Status.AWAITING_PROMOTION,
            awaiting_since=timezone.now(),
            promotion_decision="",
            promotion_decided_by=None,
        )

    def stop_awaiting(self, decision: str = "", user: Any = None) -> None:
        """AWAITING_PROMOTION -> RUNNING with ``decision`` (a Decision, or "" for an abort).

        ``user``: who decided; None when the timeout rejected it.
        """
        self._move(
            {self.Status.AWAITING_PROMOTION},
            self.Status.RUNNING,
            promotion_decision=decision,
            promotion_decided_by=user if getattr(user, "pk", None) else None,
        )

    @property
    def promotion_deadline(self) -> datetime | None:
        """When a deployment awaiting promotion is rejected unless someone decides first."""
        if self.status != self.Status.AWAITING_PROMOTION or self.awaiting_since is None:
            return None
        timeout = (self.descriptor.get("promotion") or {}).get("timeout")
        if not isinstance(timeout, int | float):
            return None
        return self.awaiting_since + timedelta(seconds=float(timeout))


class LogLine(models.Model):
    """One line of a live log (deployments, scaling runs), in order of ``seq`` per owner."""

    # The name of the concrete model's foreign key to the log's owner.
    owner_field: ClassVar[str]

    class Level(models.TextChoices):
        DEBUG = "debug", "Debug"
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    seq = models.PositiveIntegerField()
    time = models.DateTimeField(default=timezone.now)
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.INFO)
    step = models.CharField(max_length=32, blank=True, default="")
    message = models.TextField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        owner_id = getattr(self, f"{self.owner_field}_id")
        return f"#{owner_id}:{self.seq} {self.message[:40]}"

    def as_payload(self) -> dict[str, Any]:
        """The JSON shape sent to browsers and returned by the API."""
        return {
            "seq": self.seq,
            "time": self.time.isoformat(),
            "level": self.level,
            "step": self.step,
            "message": self.message,
        }


class DeploymentLog(LogLine):
    """One line of a deployment's log, in order of ``seq``."""

    owner_field = "deployment"
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="logs")

    class Meta:
        ordering = ["deployment", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "seq"], name="deploymentlog_unique_seq"),
        ]


class RoleBinding(models.Model):
    """A role (deployer.roles.ROLES) given to one user or one group, in one namespace or ``*``."""

    EVERY_NAMESPACE = "*"

    role = models.CharField(max_length=16)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="role_bindings",
    )
    group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="role_bindings"
    )
    namespace = models.CharField(max_length=63)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["namespace", "role", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False),
                name="rolebinding_user_or_group",
            ),
            models.UniqueConstraint(
                fields=["role", "user", "namespace"],
                condition=models.Q(user__isnull=False),
                name="rolebinding_unique_user",
            ),
            models.UniqueConstraint(
                fields=["role", "group", "namespace"],
                condition=models.Q(group__isnull=False),
                name="rolebinding_unique_group",
            ),
        ]

    def __str__(self) -> str:
        who = f"user {self.user}" if self.user_id else f"group {self.group}"
        return f"{self.role} on {self.namespace} for {who}"


class RegistryCredential(models.Model):
    """The login Greenlight uses for one registry host (tag lookups and polling)."""

    host = models.CharField(max_length=255, unique=True)
    username = models.CharField(max_length=255, blank=True, default="")
    password = models.CharField(max_length=1024, blank=True, default="")
    # Plain HTTP instead of HTTPS (loopback registries use HTTP without an entry).
    plain_http = models.BooleanField(default=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["host"]

    def __str__(self) -> str:
        return self.host
