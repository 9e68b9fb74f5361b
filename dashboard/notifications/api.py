"""REST API of the notifications: ``/api/notifications/subscriptions/`` (CRUD) and the delivery log.

Reading needs the permission to view apps; writing the permission to change apps. A
signed webhook's secret is in the answer that made it (a create, or ``rotate_secret``)
and masked in every other.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.exceptions import ValidationError

from dashboard.api.permissions import ActionPermission, writes
from dashboard.api.schema import ApiSchema
from dashboard.notifications import validation
from dashboard.notifications.models import Delivery, DeliveryAttempt, Subscription, new_secret
from deployer import permissions
from deployer.livelog import MAX_DB_INT
from deployer.models import App


class SubscriptionSerializer(serializers.ModelSerializer):
    """A subscription; ``app`` null means every app (and the events of no app)."""

    app = serializers.PrimaryKeyRelatedField(
        queryset=App.objects.all(), allow_null=True, required=False, default=None
    )
    events = serializers.ListField(
        child=serializers.CharField(max_length=64),
        help_text="Event names from deployer.events: queued, started, awaiting_promotion, "
        "succeeded, failed, rolled_back, aborted, guard_swap_back, scaling_run_failed, "
        "drain_stuck, lb_refused_config.",
    )
    secret = serializers.SerializerMethodField(
        help_text="The signing secret of a signed webhook: in full in the answer that made it, "
        "masked otherwise."
    )
    rotate_secret = serializers.BooleanField(
        write_only=True, required=False, default=False, help_text="Make a new signing secret."
    )

    class Meta:
        model = Subscription
        fields = (
            "id",
            "name",
            "app",
            "events",
            "channel",
            "target",
            "enabled",
            "secret",
            "rotate_secret",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("id", "created_at", "updated_at")

    def get_secret(self, subscription: Subscription) -> str:
        """The secret when this answer made it, else its masked form."""
        if self.context.get("revealed") == subscription.pk:
            return subscription.secret
        return subscription.masked_secret

    def _current(self, attrs: dict[str, Any], name: str) -> Any:
        if name in attrs:
            return attrs[name]
        return getattr(self.instance, name, None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Events against the scope, the target against the channel (as the page checks them)."""
        errors: dict[str, list[str]] = {}
        if "events" in attrs or "app" in attrs:
            try:
                attrs["events"] = validation.clean_events(
                    self._current(attrs, "events"), self._current(attrs, "app")
                )
            except DjangoValidationError as exc:
                errors["events"] = exc.messages
        if "target" in attrs or "channel" in attrs:
            try:
                attrs["target"] = validation.clean_target(
                    self._current(attrs, "channel"), self._current(attrs, "target") or ""
                )
            except DjangoValidationError as exc:
                errors["target"] = exc.messages
        if errors:
            raise ValidationError(errors)
        return attrs

    def _with_secret(self, subscription: Subscription, rotate: bool) -> None:
        if subscription.channel != Subscription.Channel.WEBHOOK:
            subscription.secret = ""
        elif rotate or not subscription.secret:
            subscription.secret = new_secret()
            subscription.save(update_fields=["secret"])
            self.context["revealed"] = subscription.pk
            return
        subscription.save(update_fields=["secret"])

    def create(self, validated_data: dict[str, Any]) -> Subscription:
        """Create; a signed webhook gets its secret, revealed in this answer."""
        validated_data.pop("rotate_secret", None)
        subscription = super().create(validated_data)
        self._with_secret(subscription, rotate=False)
        return subscription

    def update(self, instance: Subscription, validated_data: dict[str, Any]) -> Subscription:
        """Update; ``rotate_secret`` (or a switch to the webhook channel) makes a new secret."""
        rotate = bool(validated_data.pop("rotate_secret", False))
        subscription = super().update(instance, validated_data)
        self._with_secret(subscription, rotate=rotate)
        return subscription


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    """One try: when, the HTTP status (if any), the error (if any)."""

    class Meta:
        model = DeliveryAttempt
        fields = ("at", "ok", "status_code", "error")


class DeliverySerializer(serializers.ModelSerializer):
    """A delivery of one event to one subscription, with every attempt."""

    attempt_log = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = (
            "id",
            "subscription",
            "event",
            "payload",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "created_at",
            "finished_at",
            "attempt_log",
        )
        read_only_fields = fields


class SubscriptionViewSet(viewsets.ModelViewSet):
    """Subscriptions: list and read with the view permission, write with the app-change one."""

    serializer_class = SubscriptionSerializer
    permission_classes = [ActionPermission]
    schema = ApiSchema()
    action_perms = writes(permissions.CHANGE)

    def get_queryset(self) -> QuerySet[Subscription]:
        """Every subscription, by name."""
        return Subscription.objects.select_related("app").order_by("name", "id")

    def perform_create(self, serializer: serializers.BaseSerializer[Subscription]) -> None:
        """Record who made it."""
        serializer.save(created_by=self.request.user)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter(
                "status", str, enum=Delivery.Status.values, description="Only this status."
            ),
            OpenApiParameter("subscription", int, description="Only this subscription's."),
        ]
    )
)
class DeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """The delivery log, newest first."""

    serializer_class = DeliverySerializer
    permission_classes = [ActionPermission]
    schema = ApiSchema()

    def get_queryset(self) -> QuerySet[Delivery]:
        """Deliveries with their attempts; ``?status=`` and ``?subscription=`` filter the list."""
        deliveries = Delivery.objects.prefetch_related("attempt_log").order_by("-created_at", "-id")
        if self.action != "list":
            return deliveries
        query = self.request.query_params
        status = query.get("status")
        if status:
            if status not in Delivery.Status.values:
                raise ValidationError(
                    {"status": [f"Choose one of {', '.join(Delivery.Status.values)}."]}
                )
            deliveries = deliveries.filter(status=status)
        subscription = query.get("subscription")
        if subscription:
            if not subscription.isdigit() or int(subscription) > MAX_DB_INT:
                raise ValidationError(
                    {"subscription": [f"A subscription id (a number up to {MAX_DB_INT})."]}
                )
            deliveries = deliveries.filter(subscription_id=int(subscription))
        return deliveries
