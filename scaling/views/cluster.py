"""Cluster page: node groups, nodes and apps, with the manual actions that start runs."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from dashboard.audit.service import changes, record, state
from deployer.errors import KubeError
from deployer.models import App
from deployer.permissions import visible_or_404
from scaling import services
from scaling.drain import evictable_count
from scaling.forms import CapacityForm, DrainForm, NodeGroupForm, ScaleAppForm
from scaling.kube import LOCAL_GROUP_LABEL, KubeNodes
from scaling.models import NodeGroup, ScalingRun
from scaling.permissions import (
    can_edit_node_groups,
    can_run,
    can_scale_apps,
    can_view,
    require,
)
from scaling.planner import app_baseline
from scaling.views import delete_row

logger = logging.getLogger(__name__)

NODE_ACTIONS = {
    "cordon": ScalingRun.Kind.CORDON,
    "uncordon": ScalingRun.Kind.UNCORDON,
    "drain": ScalingRun.Kind.DRAIN,
}


def _nodes() -> tuple[list[dict[str, object]], str]:
    """The cluster's nodes with their pod counts, or an error message when unreachable."""
    ops = KubeNodes()
    try:
        rows = []
        by_node = ops.pods_by_node()
        for node in ops.list_nodes():
            pods = by_node.get(node.name, [])
            rows.append(
                {
                    "node": node,
                    "group": node.labels.get(LOCAL_GROUP_LABEL, ""),
                    "pods": len(pods),
                    "movable": evictable_count(pods),
                }
            )
        return rows, ""
    except KubeError as exc:
        logger.warning("cluster unreachable for the scaling page: %s", exc)
        return [], f"The cluster could not be reached: {exc}"


def cluster(request: HttpRequest) -> HttpResponse:
    """Node groups, nodes and apps; each with its manual scaling actions."""
    require(can_view(request.user), "see node groups and nodes")
    nodes, error = _nodes()
    apps = [
        {"app": app, "baseline": app_baseline(app)}
        for app in App.objects.order_by("namespace", "name")
    ]
    return render(
        request,
        "scaling/cluster.html",
        {
            "groups": NodeGroup.objects.all(),
            "nodes": nodes,
            "cluster_error": error,
            "apps": apps,
            "can_run": can_run(request.user),
            "can_scale_apps": can_scale_apps(request.user),
            "can_edit": can_edit_node_groups(request.user),
        },
    )


def node_group_form(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """Create or change a node group."""
    require(can_edit_node_groups(request.user), "change node groups")
    group = get_object_or_404(NodeGroup, pk=pk) if pk is not None else None
    form = NodeGroupForm(request.POST or None, instance=group)
    before = state(group) if group else {}
    if request.method == "POST":
        if form.is_valid():
            saved = form.save()
            action = "node_group.edit" if group else "node_group.create"
            record(request, action, saved, changes(before, state(saved)))
            messages.success(request, f"Node group {saved.name} saved.")
            return redirect("scaling:cluster")
        return render(
            request, "scaling/node_group_form.html", {"form": form, "group": group}, status=400
        )
    return render(request, "scaling/node_group_form.html", {"form": form, "group": group})


@require_POST
def node_group_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Forget a node group (its machines stay); schedules lose their rows for it."""
    require(can_edit_node_groups(request.user), "delete node groups")
    group = get_object_or_404(NodeGroup, pk=pk)
    message = "Node group {name} deleted; its machines were not touched."
    return delete_row(request, group, message, "scaling:cluster")


@require_POST
def node_group_capacity(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a run that brings the node group to the requested capacity."""
    require(can_run(request.user), "scale node groups")
    group = get_object_or_404(NodeGroup, pk=pk)
    form = CapacityForm(request.POST, group=group)
    if not form.is_valid():
        messages.error(request, f"{group.name}: {' '.join(form.errors['desired'])}")
        return redirect("scaling:cluster")
    run = services.request_capacity(group, form.cleaned_data["desired"], request.user)
    return redirect("scaling:run-detail", pk=run.pk)


@require_POST
def queue_app_scale(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a run that sets the app's replicas."""
    app = get_object_or_404(App, pk=pk)
    visible_or_404(request.user, app)
    require(can_scale_apps(request.user, app), "scale apps")
    form = ScaleAppForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{app.name}: {' '.join(form.errors.get('replicas', []))}")
        return redirect("scaling:cluster")
    data = form.cleaned_data
    run = services.request_app_scale(app, data["replicas"], request.user, baseline=data["baseline"])
    return redirect("scaling:run-detail", pk=run.pk)


@require_POST
def node_action(request: HttpRequest, name: str, action: str) -> HttpResponse:
    """Start a run that cordons, uncordons or drains node ``name``."""
    require(can_run(request.user), "cordon or drain nodes")
    kind = NODE_ACTIONS.get(action)
    if kind is None:
        messages.error(request, f"Unknown node action {action!r}.")
        return redirect("scaling:cluster")
    form = DrainForm(request.POST)
    force, deadline = False, None
    if kind == ScalingRun.Kind.DRAIN:
        if not form.is_valid():
            messages.error(request, "Drain: the deadline must be between 5 and 3600 seconds.")
            return redirect("scaling:cluster")
        force, deadline = form.cleaned_data["force"], form.cleaned_data["deadline"]
    try:
        run = services.request_node_action(kind, name, request.user, force=force, deadline=deadline)
    except services.InvalidNode as exc:
        messages.error(request, str(exc))
        return redirect("scaling:cluster")
    return redirect("scaling:run-detail", pk=run.pk)
