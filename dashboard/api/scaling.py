"""REST API of scaling under /api/scaling/: runs and their logs, schedules, node groups, actions.

Schedules and node groups are created, changed and deleted with the editor's rules
(``scaling.editor``, ``scaling.forms``). Every action that changes the cluster records
a run and answers 202 with it; the run's ``logs`` endpoint pages through its log as the
deployment API does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes, schema
from rest_framework.exceptions import NotFound, ParseError, PermissionDenied
from rest_framework.exceptions import ValidationError as BadRequest
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from dashboard.api.logpage import log_page
from dashboard.api.permissions import writes
from dashboard.api.scaling_serializers import (
    NodeGroupSerializer,
    RunFilterSerializer,
    RunLogPageSerializer,
    ScalingCapacityRequest,
    ScalingNodeActionRequest,
    ScalingRunSerializer,
    ScalingScaleRequest,
    ScheduleSerializer,
)
from dashboard.api.schema import BAD_REQUEST, NOT_FOUND, ApiSchema
from dashboard.audit import service as audit
from deployer.livelog import parse_after
from deployer.models import App
from deployer.permissions import can_view_app
from scaling import permissions, services
from scaling.editor import ScheduleEdit
from scaling.forms import CapacityForm, DrainForm, NodeGroupForm, ScaleAppForm
from scaling.models import NodeGroup, ScalingRun, ScalingRunLog, Schedule
from scaling.views import RELATED

LOG_PAGE = 500
NODE_VERBS = {
    "cordon": ScalingRun.Kind.CORDON,
    "uncordon": ScalingRun.Kind.UNCORDON,
    "drain": ScalingRun.Kind.DRAIN,
}


class ScalingPermission(BasePermission):
    """Viewing needs a role on ``*``; each changing action names the one it needs there."""

    message = "You do not have permission to do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        """The action's role on ``*`` (viewer for reads)."""
        needed = getattr(view, "action_perms", {}).get(getattr(view, "action", None))
        return permissions.allows_global(request.user, needed or permissions.VIEW)


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


def _field_errors(form: Any) -> BadRequest:
    """A form's errors as DRF's: each field by name with its messages."""
    return BadRequest(
        {
            ("non_field_errors" if key == "__all__" else key): [str(m) for m in messages]
            for key, messages in form.errors.items()
        }
    )


class ScalingModelViewSet(viewsets.ModelViewSet):
    """A scaling resource that is created, edited and deleted: ``action_perms`` names each write's."""

    permission_classes = [ScalingPermission]
    schema = ApiSchema()

    def perform_destroy(self, instance: Schedule | NodeGroup) -> None:
        """Delete, recorded in the audit trail with what the row held."""
        kind = "schedule" if isinstance(instance, Schedule) else "node_group"
        held = audit.state(instance, related=RELATED.get(kind, ()))
        audit.record(self.request, f"{kind}.delete", instance, audit.changes(held, {}))
        instance.delete()


@extend_schema_view(
    list=extend_schema(parameters=[RunFilterSerializer]),
)
class ScalingRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs, newest first; ``?kind=`` and ``?status=`` filter."""

    serializer_class = ScalingRunSerializer
    permission_classes = [ScalingPermission]
    schema = ApiSchema()

    def get_queryset(self) -> QuerySet[ScalingRun]:
        """Runs, optionally of one kind and status."""
        runs = ScalingRun.objects.all()
        if self.action != "list":
            return runs
        query = RunFilterSerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        if "kind" in query.validated_data:
            runs = runs.filter(kind=query.validated_data["kind"])
        if "status" in query.validated_data:
            runs = runs.filter(status=query.validated_data["status"])
        return runs

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "after", int, description="Lines after this seq; clamped to 0 and the largest seq."
            )
        ],
        responses={200: RunLogPageSerializer},
    )
    @action(detail=True, methods=["get"])
    def logs(self, request: Request, pk: Any = None) -> Response:
        """Stored lines with ``seq`` above ``after``; page with ``after=last_seq``."""
        run = self.get_object()
        try:
            after = parse_after(request.query_params.get("after"))
        except ValueError:
            raise BadRequest({"after": ["A whole number."]}) from None
        lines = ScalingRunLog.objects.filter(run=run, seq__gt=after)[: LOG_PAGE + 1]
        return log_page([line.as_payload() for line in lines], after, LOG_PAGE, run.status)


class ScheduleViewSet(ScalingModelViewSet):
    """Schedules with their next runs: create, edit and delete with the editor's rules; dry runs."""

    serializer_class = ScheduleSerializer
    action_perms = writes(permissions.EDIT_SCHEDULES, dry_run=permissions.RUN)
    queryset = Schedule.objects.prefetch_related(
        "app_actions__app", "node_group_actions__node_group"
    )

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """201 with the new schedule; 400 with each bad field by name."""
        saved = self._save(request, None, partial=False)
        return Response(self._answer(saved), status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Edit (PUT: every field, PATCH: those given); its latest due time applies again."""
        saved = self._save(request, self.get_object(), partial=kwargs.get("partial", False))
        return Response(self._answer(saved))

    def _save(self, request: Request, schedule: Schedule | None, *, partial: bool) -> Schedule:
        before = audit.state(schedule, related=RELATED["schedule"]) if schedule else {}
        shape = self.get_serializer(schedule, data=request.data, partial=partial)
        shape.is_valid(raise_exception=True)
        edit = ScheduleEdit.from_api(_api_body(shape.validated_data), schedule, request.user)
        valid = edit.is_valid()
        if edit.scales_apps() and not permissions.can_scale_apps(request.user):
            # A schedule with app rows scales those apps when it fires: the same right as Scale.
            raise PermissionDenied("Scaling apps by schedule needs deployer.add_deployment.")
        if not valid:
            raise BadRequest(edit.api_errors())
        saved = edit.save()
        after = audit.state(saved, related=RELATED["schedule"])
        action = "schedule.edit" if schedule else "schedule.create"
        audit.record(request, action, saved, audit.changes(before, after))
        return saved

    def _answer(self, schedule: Schedule) -> dict[str, Any]:
        fresh = self.get_queryset().get(pk=schedule.pk)
        return dict(self.get_serializer(fresh).data)

    @extend_schema(request=None, responses={202: ScalingRunSerializer})
    @action(detail=True, methods=["post"], url_path="dry-run")
    def dry_run(self, request: Request, pk: Any = None) -> Response:
        """Log what the schedule's actions would change now, changing nothing (202)."""
        return _accepted(request, services.request_dry_run(self.get_object(), request.user))


def _api_body(validated: Mapping[str, Any]) -> dict[str, Any]:
    """A validated schedule body with the rows' ids under their API names."""
    body = dict(validated)
    for name, target in (("app_actions", "app"), ("node_group_actions", "node_group")):
        if name in body:
            body[name] = [
                {
                    **{k: v for k, v in row.items() if k != f"{target}_id"},
                    target: row[f"{target}_id"],
                }
                for row in body[name]
            ]
    return body


class NodeGroupViewSet(ScalingModelViewSet):
    """Node groups: create, edit and delete with the node group form's rules; ``capacity`` runs."""

    serializer_class = NodeGroupSerializer
    action_perms = writes(permissions.EDIT_NODE_GROUPS, capacity=permissions.RUN)
    queryset = NodeGroup.objects.all()

    def perform_create(self, serializer: BaseSerializer[NodeGroup]) -> None:
        """Save through the node group form."""
        serializer.instance = self._form_save(None, serializer.validated_data)

    def perform_update(self, serializer: BaseSerializer[NodeGroup]) -> None:
        """Save through the node group form; fields left out keep their values."""
        serializer.instance = self._form_save(serializer.instance, serializer.validated_data)

    def _form_save(self, group: NodeGroup | None, changes: Mapping[str, Any]) -> NodeGroup:
        data = {name: getattr(group, name) for name in NodeGroupForm.Meta.fields} if group else {}
        data.update(changes)
        before = audit.state(group) if group else {}
        form = NodeGroupForm(data, instance=group)
        if not form.is_valid():
            raise _field_errors(form)
        saved = form.save()
        action = "node_group.edit" if group else "node_group.create"
        audit.record(self.request, action, saved, audit.changes(before, audit.state(saved)))
        return saved

    @extend_schema(
        request=ScalingCapacityRequest,
        responses={202: ScalingRunSerializer, 400: BAD_REQUEST, 404: NOT_FOUND},
    )
    @action(detail=True, methods=["post"])
    def capacity(self, request: Request, pk: Any = None) -> Response:
        """``{"desired": n}`` within the group's bounds; 202 with the run, 400 otherwise."""
        group = self.get_object()
        form = CapacityForm(_body(request, '{"desired": 3}'), group=group)
        if not form.is_valid():
            return _form_errors(form)
        return _accepted(
            request, services.request_capacity(group, form.cleaned_data["desired"], request.user)
        )


class _RunPermission(ScalingPermission):
    """May start runs: an operator on ``*``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        """The run action on ``*``."""
        return permissions.can_run(request.user)


class _ScaleAppsPermission(BasePermission):
    """May scale the app the route names: a deployer in its namespace (404 where it is unseen)."""

    message = "You do not have permission to do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        """The scale action in the app's namespace."""
        if not request.user.is_authenticated:
            return False
        app = get_object_or_404(App, pk=view.kwargs.get("pk"))
        allowed = permissions.can_scale_apps(request.user, app)
        if not (allowed or can_view_app(request.user, app)):
            raise NotFound()
        return allowed


@extend_schema(request=ScalingScaleRequest, responses={202: ScalingRunSerializer})
@api_view(["POST"])
@permission_classes([_ScaleAppsPermission])
@schema(ApiSchema())
def queue_app_scale(request: Request, pk: int) -> Response:
    """``{"replicas": n, "baseline": false}``: a run that scales the app, yielding to deploys."""
    app = get_object_or_404(App, pk=pk)
    form = ScaleAppForm(_body(request, '{"replicas": 2, "baseline": false}'))
    if not form.is_valid():
        return _form_errors(form)
    data = form.cleaned_data
    return _accepted(
        request,
        services.request_app_scale(app, data["replicas"], request.user, baseline=data["baseline"]),
    )


@extend_schema(
    request=ScalingNodeActionRequest,
    parameters=[
        OpenApiParameter("name", str, OpenApiParameter.PATH, description="The node's name."),
        OpenApiParameter("verb", str, OpenApiParameter.PATH, enum=sorted(NODE_VERBS)),
    ],
    responses={202: ScalingRunSerializer},
)
@api_view(["POST"])
@permission_classes([_RunPermission])
@schema(ApiSchema())
def node_action(request: Request, name: str, verb: str) -> Response:
    """Cordon, uncordon or drain (``{"force": false, "deadline": 300}``) node ``name``."""
    if verb not in NODE_VERBS:
        return Response({"detail": f"Unknown node action {verb!r}."}, status=404)
    form = DrainForm(_body(request, '{"force": false, "deadline": 300}'))
    if not form.is_valid():
        return _form_errors(form)
    try:
        run = services.request_node_action(
            NODE_VERBS[verb],
            name,
            request.user,
            force=bool(form.cleaned_data["force"]),
            deadline=form.cleaned_data["deadline"],
        )
    except services.InvalidNode as exc:
        return Response({"node": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    return _accepted(request, run)
