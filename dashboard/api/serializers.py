"""REST serializers; App rules come from the deployer's model validation (App.full_clean)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from dashboard.forms import duplicate_name_message
from deployer import envvars, permissions
from deployer.livelog import MAX_DB_INT
from deployer.models import App, Deployment, DeploymentLog
from deployer.validation import (
    PROMOTION_CHOICES,
    PROMOTION_TIMEOUT_MAX,
    PROMOTION_TIMEOUT_MIN,
    TRAFFIC_CHOICES,
)

FIXED_AFTER_CREATE = ("name", "namespace")

SECRET_REF_SCHEMA = {
    "type": "object",
    "properties": {
        envvars.SECRET_KEY_REF: {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "The Secret, in the app's namespace."},
                "key": {"type": "string", "description": "The key within the Secret."},
            },
            "required": ["name", "key"],
            "additionalProperties": False,
        }
    },
    "required": [envvars.SECRET_KEY_REF],
    "additionalProperties": False,
}


@extend_schema_field({"oneOf": [{"type": "string"}, SECRET_REF_SCHEMA]})
class EnvValueField(serializers.Field):
    """An env value: text, or ``{"secretKeyRef": {"name": ..., "key": ...}}`` (App.clean checks it)."""

    default_error_messages = {
        # Doubled braces: DRF formats error messages.
        "invalid": 'Enter text, or a Secret\'s key as {{"secretKeyRef": {{"name": ..., "key": ...}}}}.'
    }

    def to_internal_value(self, data: Any) -> Any:
        """Text or a one-key object; the shape inside is checked with the app."""
        if isinstance(data, str) or (isinstance(data, dict) and envvars.SECRET_KEY_REF in data):
            return data
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        """As stored."""
        return value


class AppSerializer(serializers.ModelSerializer):
    """An app descriptor; ``POST`` creates one (201 with ``id``), ``PATCH`` changes fields."""

    url = serializers.HyperlinkedIdentityField(view_name="api:app-detail")
    web_url = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    updated_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    env = serializers.DictField(
        child=EnvValueField(),
        required=False,
        help_text="Names to text values or Secret keys; values read as ••••, unless you may "
        "change apps.",
    )
    extra_pod_spec = serializers.DictField(required=False)

    class Meta:
        model = App
        fields = [
            "id",
            "url",
            "web_url",
            *App.DESCRIPTOR_FIELDS,
            "live_version",
            "follow_last_poll",
            "follow_newest_tag",
            "follow_last_error",
            "webhook_secret",
            "created_by",
            "updated_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "live_version",
            "follow_last_poll",
            "follow_newest_tag",
            "follow_last_error",
            "webhook_secret",
            "created_at",
            "updated_at",
        ]
        # Uniqueness is checked by App.full_clean below, with messages on the right field.
        validators: list[Any] = []
        extra_kwargs = {
            "frontend": {"validators": []},
            "traffic": {
                "error_messages": {
                    "invalid_choice": f'Unknown traffic mode "{{input}}": choose {TRAFFIC_CHOICES}.'
                }
            },
            "promotion": {
                "error_messages": {
                    "invalid_choice": f'Unknown promotion mode "{{input}}": choose '
                    f"{PROMOTION_CHOICES}."
                }
            },
            "guard_bake_seconds": {
                "help_text": "Seconds the new version bakes under users' traffic after the "
                "switch, the old one warm; a breach swaps back. 0: no guard."
            },
            "guard_max_error_percent": {
                "help_text": "The new version breaches when more than this percentage of its "
                "requests answers 5xx during the bake."
            },
            "guard_min_requests": {
                "help_text": "Fewer requests during the bake are too few to judge (it passes)."
            },
            "guard_max_response_ms": {
                "help_text": "Optional: the new version breaches when its average response "
                "time is above this many milliseconds."
            },
            "guard_promql": {
                "help_text": "Optional: a PromQL query asked of GREENLIGHT_PROMETHEUS_URL during "
                "the bake; any sample with a non-zero value breaches."
            },
            "pre_switch_hook": {
                "help_text": "Optional: shell words run in the new version's image, as a Job, "
                "after the health checks and before the switch (e.g. migrate --noinput); "
                "a failure or a timeout rolls the deploy back. Empty: no hook."
            },
            "pre_switch_hook_timeout_seconds": {
                "help_text": "Seconds the pre-switch hook may run before it is stopped and "
                "the deploy rolled back (default 300)."
            },
            "promotion_timeout_seconds": {
                "min_value": PROMOTION_TIMEOUT_MIN,
                "max_value": PROMOTION_TIMEOUT_MAX,
                "error_messages": {
                    key: f"Enter a promotion timeout between {PROMOTION_TIMEOUT_MIN} second and "
                    f"{PROMOTION_TIMEOUT_MAX} seconds (7 days)."
                    for key in ("min_value", "max_value")
                },
                "help_text": "Seconds a deploy of a manual app awaits Promote or Reject before "
                "it is rejected.",
            },
        }

    def to_representation(self, instance: App) -> dict[str, Any]:
        """The app; env values and the webhook secret only for users who may change apps."""
        data = super().to_representation(instance)
        request = self.context.get("request")
        if request is None or not permissions.can_change_app(request.user, instance):
            data.pop("webhook_secret", None)
            data["env"] = envvars.masked(instance.env)
        return data

    def get_web_url(self, app: App) -> str:
        """The app's page in the dashboard."""
        return self._absolute(reverse("app-detail", args=[app.pk]))

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Run the deployer's validation on the would-be app; errors land on their fields."""
        app = self.instance
        if app is not None:
            fixed = {
                field: ["Fixed once the app exists; create a new app instead."]
                for field in FIXED_AFTER_CREATE
                if field in attrs and attrs[field] != getattr(app, field)
            }
            if fixed:
                raise serializers.ValidationError(fixed)
        candidate = App(pk=app.pk if app else None)
        if app is not None:
            for field in App._meta.concrete_fields:
                setattr(candidate, field.attname, getattr(app, field.attname))
        for key, value in attrs.items():
            setattr(candidate, key, value)
        errors: dict[str, list[str]] = {}
        try:
            # The frontend's uniqueness is part of App.clean(); the name's is checked below.
            candidate.full_clean(
                exclude=["webhook_secret", "created_by", "updated_by"],
                validate_unique=False,
                validate_constraints=False,
            )
        except DjangoValidationError as exc:
            errors = {key: list(messages) for key, messages in exc.message_dict.items()}
        duplicate = duplicate_name_message(candidate)
        if duplicate:
            errors.setdefault("name", []).append(duplicate)
        if "__all__" in errors:
            errors[api_settings.NON_FIELD_ERRORS_KEY] = errors.pop("__all__")
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class DeploymentSerializer(serializers.ModelSerializer):
    """One run of the workflow: status, timings, steps and each pod's health result."""

    url = serializers.HyperlinkedIdentityField(view_name="api:deployment-detail")
    web_url = serializers.SerializerMethodField()
    logs_url = serializers.SerializerMethodField()
    app_name = serializers.CharField(source="app.name", read_only=True)
    triggered_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    status = serializers.ChoiceField(choices=Deployment.Status.choices, read_only=True)
    promotion_decided_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    promotion_deadline = serializers.SerializerMethodField(
        help_text="While awaiting promotion: when it is rejected unless promoted first."
    )

    class Meta:
        model = Deployment
        fields = [
            "id",
            "url",
            "web_url",
            "logs_url",
            "app",
            "app_name",
            "kind",
            "version",
            "previous_version",
            "image",
            "status",
            "trigger",
            "triggered_by",
            "trigger_detail",
            "abort_requested",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "failure_reason",
            "awaiting_since",
            "promotion_deadline",
            "promotion_decision",
            "promotion_decided_by",
            "steps",
            "health_results",
            "guard",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "guard": {
                "help_text": "The guard after the switch (deployer.guard): its state (baking, "
                "passed, swapped_back), both versions' requests, 5xx answers and response "
                "times during the bake, and the reason of a swap back; {} when not baked."
            }
        }

    def get_web_url(self, deployment: Deployment) -> str:
        """The deployment's page (steps and live log) in the dashboard."""
        return self._absolute(reverse("deployment-detail", args=[deployment.pk]))

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_promotion_deadline(self, deployment: Deployment) -> str | None:
        """While awaiting promotion: when it is rejected unless promoted first."""
        deadline = deployment.promotion_deadline
        return deadline.isoformat() if deadline else None

    def get_logs_url(self, deployment: Deployment) -> str:
        """Where its stored log lines are."""
        return self._absolute(reverse("api:deployment-logs", args=[deployment.pk]))

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class DeploymentListSerializer(DeploymentSerializer):
    """A deployment in a list: without steps and health results (they can be large)."""

    class Meta(DeploymentSerializer.Meta):
        fields = [
            f
            for f in DeploymentSerializer.Meta.fields
            if f not in ("steps", "health_results", "promotion_deadline", "guard")
        ]
        read_only_fields = fields


class DeployRequestSerializer(serializers.Serializer):
    """Body of ``POST /api/apps/{id}/deploy/``."""

    image = serializers.CharField(
        max_length=255, required=False, allow_blank=True, help_text="Empty: the app's image."
    )


class ScaleRequestSerializer(serializers.Serializer):
    """Body of ``POST /api/apps/{id}/scale/``."""

    replicas = serializers.IntegerField(min_value=0)


class QueuedSerializer(serializers.Serializer):
    """202 answer: the queued deployment's id and where to follow it."""

    id = serializers.IntegerField()
    status = serializers.CharField()
    url = serializers.URLField()
    web_url = serializers.URLField()
    logs_url = serializers.URLField()


class LogLineSerializer(serializers.ModelSerializer):
    """One stored log line."""

    class Meta:
        model = DeploymentLog
        fields = ["seq", "time", "level", "step", "message"]


class LogPageSerializer(serializers.Serializer):
    """Stored lines after ``after``; ask again with ``after=last_seq`` while ``has_more``."""

    results = LogLineSerializer(many=True)
    last_seq = serializers.IntegerField()
    has_more = serializers.BooleanField()
    status = serializers.CharField()


class LogQuerySerializer(serializers.Serializer):
    """Query of the logs endpoint."""

    after = serializers.IntegerField(min_value=0, max_value=MAX_DB_INT, required=False, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=5000, required=False, default=1000)


class DeploymentFilterSerializer(serializers.Serializer):
    """Query of the deployment list."""

    app = serializers.IntegerField(min_value=1, max_value=MAX_DB_INT, required=False)
    status = serializers.ChoiceField(choices=Deployment.Status.choices, required=False)
