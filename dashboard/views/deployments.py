"""Deployment pages: one deployment with its live log, the history of every app, abort,
promote and reject."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import queries
from dashboard.forms import HistoryFilterForm
from dashboard.steps import step_rows
from deployer import permissions, preview, services
from deployer.errors import DeployError
from deployer.models import Deployment

HISTORY_PAGE_SIZE = 50


def _deployment_for(request: HttpRequest, pk: int) -> Deployment:
    deployment = get_object_or_404(Deployment.objects.select_related("app", "triggered_by"), pk=pk)
    permissions.visible_or_404(request.user, deployment)
    return deployment


@require_GET
def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Steps, the log (stored lines now, the rest live), the status banner and pod health."""
    deployment = _deployment_for(request, pk)
    lines = queries.log_lines(deployment)
    return render(
        request,
        "dashboard/deployment_detail.html",
        {
            "deployment": deployment,
            "app": deployment.app,
            "lines": lines,
            "last_seq": lines[-1]["seq"] if lines else 0,
            "steps": step_rows(deployment),
            "statuses": Deployment.Status.choices,
            "can_abort": permissions.can_abort(request.user, deployment),
            # While the version is not retired: its preview is in etcd.
            "preview_url": preview.published_url(deployment),
            "can_promote": permissions.can_promote(request.user, deployment),
        },
    )


@require_POST
def deployment_abort(request: HttpRequest, pk: int) -> HttpResponse:
    """Abort a queued deployment now, or a running one at its next step."""
    deployment = _deployment_for(request, pk)
    if not permissions.can_abort(request.user, deployment):
        raise PermissionDenied("You may not abort deployments.")
    try:
        services.request_abort(deployment, user=request.user)
    except DeployError as exc:
        messages.warning(request, exc.message)
    else:
        messages.success(request, f"Abort of deployment #{deployment.pk} requested.")
    return redirect("deployment-detail", pk=deployment.pk)


def _decide(request: HttpRequest, pk: int, decision: str) -> HttpResponse:
    """Promote or reject as the user asked; the deployment page follows what the run does."""
    deployment = _deployment_for(request, pk)
    if not permissions.can_promote(request.user, deployment):
        raise PermissionDenied("You may not promote or reject deployments.")
    try:
        services.request_promotion(deployment, decision, user=request.user)
    except DeployError as exc:
        messages.warning(request, exc.message)
    else:
        done = "Promoted" if decision == Deployment.Decision.PROMOTE else "Rejected"
        messages.success(request, f"{done} deployment #{deployment.pk}.")
    return redirect("deployment-detail", pk=deployment.pk)


@require_POST
def deployment_promote(request: HttpRequest, pk: int) -> HttpResponse:
    """Promote a deployment awaiting promotion: its switch goes on."""
    return _decide(request, pk, Deployment.Decision.PROMOTE)


@require_POST
def deployment_reject(request: HttpRequest, pk: int) -> HttpResponse:
    """Reject a deployment awaiting promotion: it rolls back, the old version serving on."""
    return _decide(request, pk, Deployment.Decision.REJECT)


def _filter_query(request: HttpRequest) -> str:
    """The current filters as a query-string prefix for the pager's links."""
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode() + "&" if params else ""


@require_GET
def deployment_list(request: HttpRequest) -> HttpResponse:
    """Every deployment of every app, newest first, paginated; filter by status and trigger."""
    if not permissions.can_view_app(request.user):
        raise PermissionDenied("You may not see deployments.")
    filters = HistoryFilterForm(request.GET)
    visible = permissions.visible_deployments(request.user, queries.history())
    paginator = Paginator(filters.apply(visible), HISTORY_PAGE_SIZE)
    return render(
        request,
        "dashboard/history.html",
        {
            "app": None,
            "filters": filters,
            "query": _filter_query(request),
            "page": paginator.get_page(request.GET.get("page")),
            "can_deploy": False,
        },
    )
