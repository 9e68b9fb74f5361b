"""REST API of scaling under /api/scaling/: runs and their logs, schedules, node groups, actions.

Every action that changes something records a run and answers 202 with it; the run's
``logs`` endpoint pages through its log as the deployment API does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.exceptions import ParseError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from dashboard.livelog import parse_after
from deployer.models import App
from scaling import permissions, services
from scaling.forms import CapacityForm, DrainForm, ScaleAppForm
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

LOG_PAGE = 500


class ScalingPermission(BasePermission):
    """Viewing needs the view permissions; each changing action names the one it needs."""

    message = "You do not have permission to do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        """Signed in, may view scaling, and holds what the action needs."""
        user = request.user
        if not (permissions.can_view(user) and permissions.can_view_runs(user)):
            return False
        needed = getattr(view, "action_perms", {}).get(getattr(view, "action", None))
        return needed is None or bool(user.has_perm(needed))


class ScalingRunSerializer(serializers.ModelSerializer):
    """A run: what was planned, what happened, where its log is."""

    url = serializers.SerializerMethodField()
    logs_url = serializers.SerializerMethodField()

    class Meta:
        model = ScalingRun
        fields = [
            "id", "url", "logs_url", "kind", "status", "schedule", "due_at", "event",
            "params", "plan", "result", "created_at", "started_at", "finished_at",
            "failure_reason",
        ]  # fmt: skip

    def get_url(self, run: ScalingRun) -> str:
        """The run's API URL."""
        return reverse("scaling-api:run-detail", args=[run.pk], request=self.context.get("request"))

    def get_logs_url(self, run: ScalingRun) -> str:
        """The run's log lines."""
        return reverse("scaling-api:run-logs", args=[run.pk], request=self.context.get("request"))


class AppActionSerializer(serializers.ModelSerializer):
    """An app row of a schedule."""

    app_name = serializers.CharField(source="app.name", read_only=True)

    class Meta:
        model = AppAction
        fields = ["app", "app_name", "mode", "value", "floor"]


class NodeGroupActionSerializer(serializers.ModelSerializer):
    """A node group row of a schedule."""

    node_group_name = serializers.CharField(source="node_group.name", read_only=True)

    class Meta:
        model = NodeGroupAction
        fields = ["node_group", "node_group_name", "desired"]


class ScheduleSerializer(serializers.ModelSerializer):
    """A schedule, its actions and its next runs (edit schedules in the dashboard)."""

    app_actions = AppActionSerializer(many=True, read_only=True)
    node_group_actions = NodeGroupActionSerializer(many=True, read_only=True)
    next_runs = serializers.SerializerMethodField()
    problem = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = [
            "id", "name", "enabled", "kind", "cron", "days", "at_time", "until_time",
            "timezone", "revision", "app_actions", "node_group_actions", "next_runs", "problem",
        ]  # fmt: skip

    def get_next_runs(self, schedule: Schedule) -> list[dict[str, str]]:
        """The next 5 runs (local and UTC, with DST notes); none when it cannot run."""
        return [dict(row) for row in preview_schedule(schedule)[0]]

    def get_problem(self, schedule: Schedule) -> str:
        """Why the schedule cannot run (a row saved outside the editor, a zone gone), or ""."""
        return schedule_problem(schedule)


class NodeGroupSerializer(serializers.ModelSerializer):
    """A node group and its limits."""

    class Meta:
        model = NodeGroup
        fields = [
            "id", "name", "provider", "external_name", "region", "min_size", "max_size",
            "desired", "baseline_desired",
        ]  # fmt: skip


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


def _accepted(request: Request, run: ScalingRun) -> Response:
    return Response(
        ScalingRunSerializer(run, context={"request": request}).data,
        status=status.HTTP_202_ACCEPTED,
    )


def _body(request: Request, example: str) -> Mapping[str, Any]:
    """The request's body as a mapping; a JSON array, string, number or null is refused."""
    data = request.data
    if not isinstance(data, Mapping):
        raise ParseError(f"The body must be a JSON object, e.g. {example}.")
    return data


def _form_errors(form: Any) -> Response:
    return Response(form.errors.get_json_data(), status=status.HTTP_400_BAD_REQUEST)


class ScalingRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs, newest first; ``?kind=`` and ``?status=`` filter."""

    serializer_class = ScalingRunSerializer
    permission_classes = [ScalingPermission]

    def get_queryset(self) -> Any:
        """Runs, optionally of one kind and status."""
        runs = ScalingRun.objects.all()
        kind, state = self.request.query_params.get("kind"), self.request.query_params.get("status")
        if kind:
            runs = runs.filter(kind=kind)
        if state:
            runs = runs.filter(status=state)
        return runs

    @action(detail=True, methods=["get"])
    def logs(self, request: Request, pk: Any = None) -> Response:
        """Stored lines with ``seq`` above ``after``; page with ``after=last_seq``."""
        run = self.get_object()
        try:
            after = parse_after(request.query_params.get("after"))
        except ValueError:
            return Response({"after": ["A whole number."]}, status=status.HTTP_400_BAD_REQUEST)
        lines = list(ScalingRunLog.objects.filter(run=run, seq__gt=after)[: LOG_PAGE + 1])
        page = [line.as_payload() for line in lines[:LOG_PAGE]]
        return Response(
            {
                "results": page,
                "last_seq": page[-1]["seq"] if page else after,
                "has_more": len(lines) > LOG_PAGE,
                "status": run.status,
            }
        )


class ScheduleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Schedules with their next runs; ``dry-run`` records a dry run."""

    serializer_class = ScheduleSerializer
    permission_classes = [ScalingPermission]
    action_perms = {"dry_run": permissions.RUN}
    queryset = Schedule.objects.prefetch_related(
        "app_actions__app", "node_group_actions__node_group"
    )

    @extend_schema(request=None, responses={202: ScalingRunSerializer})
    @action(detail=True, methods=["post"], url_path="dry-run")
    def dry_run(self, request: Request, pk: Any = None) -> Response:
        """Log what the schedule's actions would change now, changing nothing (202)."""
        return _accepted(request, services.dry_run(self.get_object(), request.user))


class NodeGroupViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Node groups; ``capacity`` records a run that brings one to ``desired`` nodes."""

    serializer_class = NodeGroupSerializer
    permission_classes = [ScalingPermission]
    action_perms = {"capacity": permissions.RUN}
    queryset = NodeGroup.objects.all()

    @extend_schema(request=ScalingCapacityRequest, responses={202: ScalingRunSerializer})
    @action(detail=True, methods=["post"])
    def capacity(self, request: Request, pk: Any = None) -> Response:
        """``{"desired": n}`` within the group's bounds; 202 with the run, 400 otherwise."""
        group = self.get_object()
        form = CapacityForm(_body(request, '{"desired": 3}'), group=group)
        if not form.is_valid():
            return _form_errors(form)
        return _accepted(
            request, services.set_capacity(group, form.cleaned_data["desired"], request.user)
        )


class _RunPermission(ScalingPermission):
    """May view scaling and start runs."""

    def has_permission(self, request: Request, view: Any) -> bool:
        """Viewing plus the run permission."""
        return super().has_permission(request, view) and permissions.can_run(request.user)


class _ScaleAppsPermission(_RunPermission):
    """May start runs and scale apps (``deployer.add_deployment``)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        """The run permission plus the app scaling one."""
        return super().has_permission(request, view) and permissions.can_scale_apps(request.user)


@extend_schema(request=ScalingScaleRequest, responses={202: ScalingRunSerializer})
@api_view(["POST"])
@permission_classes([_ScaleAppsPermission])
def app_scale(request: Request, pk: int) -> Response:
    """``{"replicas": n, "baseline": false}``: a run that scales the app, yielding to deploys."""
    app = get_object_or_404(App, pk=pk)
    form = ScaleAppForm(_body(request, '{"replicas": 2, "baseline": false}'))
    if not form.is_valid():
        return _form_errors(form)
    data = form.cleaned_data
    return _accepted(
        request, services.scale_app(app, data["replicas"], request.user, baseline=data["baseline"])
    )


@extend_schema(request=ScalingNodeActionRequest, responses={202: ScalingRunSerializer})
@api_view(["POST"])
@permission_classes([_RunPermission])
def node_action(request: Request, name: str, verb: str) -> Response:
    """Cordon, uncordon or drain (``{"force": false, "deadline": 300}``) node ``name``."""
    kinds = {"cordon": ScalingRun.Kind.CORDON, "uncordon": ScalingRun.Kind.UNCORDON}
    kinds["drain"] = ScalingRun.Kind.DRAIN
    if verb not in kinds:
        return Response({"detail": f"Unknown node action {verb!r}."}, status=404)
    form = DrainForm(_body(request, '{"force": false, "deadline": 300}'))
    if not form.is_valid():
        return _form_errors(form)
    try:
        run = services.node_action(
            kinds[verb],
            name,
            request.user,
            force=bool(form.cleaned_data["force"]),
            deadline=form.cleaned_data["deadline"],
        )
    except services.InvalidNode as exc:
        return Response({"node": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    return _accepted(request, run)
