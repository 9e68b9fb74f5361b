"""REST viewsets: apps (CRUD, deploy, scale, swap back, undeploy), deployments (list, logs,
abort, promote, reject)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer, Serializer

from dashboard import queries
from dashboard.api.logpage import log_page
from dashboard.api.permissions import ActionPermission, writes
from dashboard.api.schema import CONFLICT, ApiSchema
from dashboard.api.serializers import (
    AppSerializer,
    DeploymentFilterSerializer,
    DeploymentListSerializer,
    DeploymentSerializer,
    DeployRequestSerializer,
    LogPageSerializer,
    LogQuerySerializer,
    QueuedSerializer,
    ScaleRequestSerializer,
)
from dashboard.audit.service import changes, record, state
from deployer import permissions, services
from deployer.errors import AppBusy, DeployError, InvalidRequest, NothingToDo
from deployer.models import App, Deployment


class Conflict(APIException):
    """409: the request clashes with the app's or the deployment's current state."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def queued(request: Request, deployment: Deployment) -> Response:
    """202 with the deployment's id and where to follow it."""
    data = DeploymentSerializer(deployment, context={"request": request}).data
    body = {key: data[key] for key in ("id", "status", "url", "web_url", "logs_url")}
    # str(): the URL is a DRF Hyperlink, which WSGI servers refuse as a header value.
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": str(data["url"])})


def deploy_error(exc: DeployError, field: str) -> APIException:
    """A deployer refusal as an API error: 400 on ``field`` for bad input, 409 otherwise."""
    if isinstance(exc, InvalidRequest):
        return ValidationError({field: [exc.message]})
    if isinstance(exc, AppBusy | NothingToDo):
        return Conflict(exc.message)
    return ValidationError({field: [exc.message]})


def validated(shape: type[Serializer[Any]], data: Any) -> dict[str, Any]:
    """``data`` (a body or a query) as ``shape`` validates it; 400 with each bad field by name."""
    checked = shape(data=data)
    checked.is_valid(raise_exception=True)
    return dict(checked.validated_data)


@contextlib.contextmanager
def refusals_on(field: str) -> Iterator[None]:
    """Raise a deployer refusal inside the block as the API error ``deploy_error`` makes."""
    try:
        yield
    except DeployError as exc:
        raise deploy_error(exc, field) from None


class AppViewSet(viewsets.ModelViewSet):
    """Apps: CRUD, plus deploy, scale, swap back and undeploy actions that answer 202 at once."""

    serializer_class = AppSerializer
    permission_classes = [ActionPermission]
    schema = ApiSchema()
    action_perms = writes(
        permissions.ADD,
        permissions.CHANGE,
        permissions.DELETE,
        deploy=permissions.DEPLOY,
        scale=permissions.SCALE,
        swap_back=permissions.SWAP_BACK,
        undeploy=permissions.UNDEPLOY,
    )

    def get_queryset(self) -> QuerySet[App]:
        """Every app, with who created and changed it; ``?namespace=`` filters."""
        apps = App.objects.select_related("created_by", "updated_by").order_by("namespace", "name")
        namespace = self.request.query_params.get("namespace")
        return apps.filter(namespace=namespace) if namespace else apps

    def perform_create(self, serializer: BaseSerializer[App]) -> None:
        """Record who created the app."""
        app = serializer.save(created_by=self.request.user, updated_by=self.request.user)
        record(self.request, "app.create", app, diff=changes({}, state(app)))

    def perform_update(self, serializer: BaseSerializer[App]) -> None:
        """Record who changed the app."""
        before = state(serializer.instance)
        app = serializer.save(updated_by=self.request.user)
        record(self.request, "app.edit", app, diff=changes(before, state(app)))

    def perform_destroy(self, instance: App) -> None:
        """Refuse to forget an app that still runs: undeploy it first."""
        if instance.live_version is not None or queries.active_deployment(instance):
            raise Conflict(
                f"{instance.name} is deployed (v{instance.live_version}) or has a deployment in "
                f"progress; undeploy it first (POST /api/apps/{instance.pk}/undeploy/)."
            )
        record(self.request, "app.delete", instance, diff=changes(state(instance), {}))
        instance.delete()

    @extend_schema(responses={204: None, 409: CONFLICT})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Forget the app; 409 while it is deployed or a deployment is in progress."""
        return super().destroy(request, *args, **kwargs)

    @extend_schema(
        request=DeployRequestSerializer, responses={202: QueuedSerializer, 409: CONFLICT}
    )
    @action(detail=True, methods=["post"])
    def deploy(self, request: Request, pk: Any = None) -> Response:
        """Queue a deploy (optionally of another ``image``); 202 with its id and URL."""
        image = validated(DeployRequestSerializer, request.data).get("image") or None
        with refusals_on("image"):
            deployment = services.request_deploy(
                self.get_object(), user=request.user, image=image, trigger=Deployment.Trigger.API
            )
        return queued(request, deployment)

    @extend_schema(request=ScaleRequestSerializer, responses={200: AppSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def scale(self, request: Request, pk: Any = None) -> Response:
        """Set the app's replicas, and its live version's in the cluster."""
        app = self.get_object()
        replicas = validated(ScaleRequestSerializer, request.data)["replicas"]
        with refusals_on("replicas"):
            services.scale_app(app, replicas, user=request.user)
        app.refresh_from_db()
        return Response(self.get_serializer(app).data)

    @extend_schema(request=None, responses={202: QueuedSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"], url_path="swap-back")
    def swap_back(self, request: Request, pk: Any = None) -> Response:
        """Queue a switch back to the previous version while it is warm; 202, or 409 without one."""
        app = self.get_object()
        with refusals_on("app"):
            deployment = services.request_swap_back(app, user=request.user)
        if deployment is None:
            raise Conflict(
                f"{app.name} has no warm previous version to swap back to; deploy that "
                f"image instead (POST /api/apps/{app.pk}/deploy/)."
            )
        return queued(request, deployment)

    @extend_schema(request=None, responses={202: QueuedSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def undeploy(self, request: Request, pk: Any = None) -> Response:
        """Queue the removal of every version, the frontend and the backend; 202."""
        app = self.get_object()
        with refusals_on("app"):
            deployment = services.request_undeploy(app, user=request.user)
        return queued(request, deployment)


class DeploymentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Deployments, newest first; ``?app=<id>`` and ``?status=`` filter."""

    permission_classes = [ActionPermission]
    schema = ApiSchema()
    action_perms = {
        "abort": permissions.ABORT,
        "promote": permissions.PROMOTE,
        "reject": permissions.REJECT,
    }

    def get_serializer_class(self) -> type[BaseSerializer[Deployment]]:
        """Lists leave out steps and health results."""
        return DeploymentListSerializer if self.action == "list" else DeploymentSerializer

    def get_queryset(self) -> QuerySet[Deployment]:
        """Deployments with their app and trigger user joined in."""
        rows = Deployment.objects.select_related(
            "app", "triggered_by", "promotion_decided_by"
        ).order_by("-created_at", "-id")
        if self.action != "list":
            return rows
        query = validated(DeploymentFilterSerializer, self.request.query_params)
        if "app" in query:
            rows = rows.filter(app_id=query["app"])
        if "status" in query:
            rows = rows.filter(status=query["status"])
        return rows.defer("descriptor", "steps", "health_results")

    @extend_schema(
        parameters=[
            OpenApiParameter("app", int, description="Only this app's deployments."),
            OpenApiParameter(
                "status",
                str,
                enum=Deployment.Status.values,
                description="Only deployments in this status; awaiting_promotion: passed its "
                "health checks and waits for promote or reject.",
            ),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Deployments, newest first, paginated."""
        return super().list(request, *args, **kwargs)

    @extend_schema(parameters=[LogQuerySerializer], responses={200: LogPageSerializer})
    @action(detail=True, methods=["get"])
    def logs(self, request: Request, pk: Any = None) -> Response:
        """Stored log lines with ``seq`` above ``after``, in order; page with ``after=last_seq``."""
        deployment = self.get_object()
        query = validated(LogQuerySerializer, request.query_params)
        after, limit = query["after"], query["limit"]
        lines = queries.log_lines(deployment, after=after, limit=limit + 1)
        return log_page(lines, after, limit, deployment.status)

    @extend_schema(request=None, responses={202: DeploymentSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def abort(self, request: Request, pk: Any = None) -> Response:
        """Abort a queued deployment now or a running one at its next step; 409 when finished."""
        deployment = self.get_object()
        try:
            deployment = services.request_abort(deployment, user=request.user)
        except DeployError as exc:
            raise Conflict(exc.message) from None
        data = DeploymentSerializer(deployment, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: DeploymentSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, pk: Any = None) -> Response:
        """Promote a deployment awaiting promotion: its switch goes on; 409 when it does not wait."""
        return self._decide(request, Deployment.Decision.PROMOTE)

    @extend_schema(request=None, responses={202: DeploymentSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: Any = None) -> Response:
        """Reject a deployment awaiting promotion: it rolls back; 409 when it does not wait."""
        return self._decide(request, Deployment.Decision.REJECT)

    def _decide(self, request: Request, decision: str) -> Response:
        deployment = self.get_object()
        try:
            deployment = services.request_promotion(deployment, decision, user=request.user)
        except DeployError as exc:
            raise Conflict(exc.message) from None
        data = DeploymentSerializer(deployment, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)
