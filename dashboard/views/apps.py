"""App pages: the list, the form, the app page and the actions on an app."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import queries
from dashboard.audit.service import changes, record, state
from dashboard.forms import AppForm, DeployForm, ScaleForm, UndeployForm, env_formset
from deployer import envvars, permissions, preview, services
from deployer.errors import DeployError
from deployer.models import App, Deployment

HISTORY_PAGE_SIZE = 50


def _app_for(request: HttpRequest, pk: int) -> App:
    app = get_object_or_404(App, pk=pk)
    permissions.visible_or_404(request.user, app)
    return app


def _require(allowed: bool, what: str) -> None:
    if not allowed:
        raise PermissionDenied(f"You may not {what}.")


@require_GET
def app_list(request: HttpRequest) -> HttpResponse:
    """Every app with its live version, replicas, frontend and last deployment; filter by namespace."""
    _require(permissions.can_view_app(request.user), "see apps")
    namespace = request.GET.get("namespace") or None
    apps = list(
        permissions.visible_apps(request.user, queries.apps_with_last_deployment(namespace))
    )
    rows = queries.app_rows(apps, queries.live_states(apps, pods=False))
    return render(
        request,
        "dashboard/app_list.html",
        {
            "rows": rows,
            "namespaces": [
                ns for ns in queries.namespaces() if permissions.can_view_app(request.user, ns)
            ],
            "namespace": namespace,
            "can_add": permissions.can_change_app(request.user),
        },
    )


def _form_page(request: HttpRequest, app: App | None) -> HttpResponse:
    instance = app or App(created_by=request.user)
    before = state(instance) if app is not None else {}
    if request.method == "POST":
        envs = env_formset(request.POST)
        data = request.POST.copy()
        envs_valid = envs.is_valid()
        data["env"] = json.dumps(envs.as_dict() if envs_valid else instance.env)
        form = AppForm(data, instance=instance)
        if form.is_valid() and not permissions.can_change_app(
            request.user, form.cleaned_data.get("namespace") or "default"
        ):
            form.add_error("namespace", "You are not an admin of this namespace.")
        if form.is_valid() and envs_valid:
            saved = form.save(commit=False)
            saved.updated_by = request.user
            saved.save()
            record(
                request, "app.edit" if app else "app.create", saved, changes(before, state(saved))
            )
            verb = "Created" if app is None else "Saved"
            messages.success(request, f"{verb} {saved.name}. Deploy it when you are ready.")
            return redirect("app-detail", pk=saved.pk)
    else:
        envs = env_formset(env=instance.env)
        form = AppForm(instance=instance)
    return render(
        request,
        "dashboard/app_form.html",
        {
            "form": form,
            "envs": envs,
            "app": app,
            "images": queries.known_images(app),
        },
        status=400 if request.method == "POST" else 200,
    )


@require_http_methods(["GET", "POST"])
def app_create(request: HttpRequest) -> HttpResponse:
    """The form for a new app."""
    _require(permissions.can_change_app(request.user), "create apps")
    return _form_page(request, None)


@require_http_methods(["GET", "POST"])
def app_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """The form for an existing app; the next deploy uses the new descriptor."""
    app = _app_for(request, pk)
    _require(permissions.can_change_app(request.user, app), "change apps")
    return _form_page(request, app)


def _detail_page(
    request: HttpRequest,
    app: App,
    *,
    deploy_form: DeployForm | None = None,
    scale_form: ScaleForm | None = None,
    status: int = 200,
) -> HttpResponse:
    recent = list(queries.history(app)[: queries.CHART_SIZE])
    active = queries.active_deployment(app)
    live = queries.live_states([app])[app.pk]
    can_change = permissions.can_change_app(request.user, app)
    # Values only for users who may change the app; the others see the names.
    env = {
        name: envvars.describe(value) if can_change else envvars.MASK
        for name, value in sorted(app.env.items())
    }
    return render(
        request,
        "dashboard/app_detail.html",
        {
            "app": app,
            "live": live,
            "active": active,
            # Where the version awaiting promotion answers, to look at before promoting it.
            "preview_url": preview.preview_url(active)
            if active is not None and active.status == Deployment.Status.AWAITING_PROMOTION
            else None,
            "recent": recent[: queries.RECENT_SIZE],
            "total": Deployment.objects.filter(app=app).count(),
            "chart": queries.chart_points(recent),
            "deploy_form": deploy_form or DeployForm(),
            "scale_form": scale_form or ScaleForm(initial={"replicas": app.replicas}),
            "images": queries.known_images(app),
            "can_deploy": permissions.can_deploy(request.user, app),
            "can_abort": permissions.can_abort(request.user, app),
            "can_promote": permissions.can_promote(request.user, app),
            "can_change": can_change,
            "env": env,
            "warm": queries.warm_version(app) is not None,
        },
        status=status,
    )


@require_GET
def app_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The app page: live version and pods, deploy, recent history and its chart."""
    return _detail_page(request, _app_for(request, pk))


@require_POST
def app_deploy(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a deploy (optionally of another image) and land on its deployment page."""
    app = _app_for(request, pk)
    _require(permissions.can_deploy(request.user, app), "deploy")

    def deploy(data: dict[str, Any]) -> HttpResponse:
        deployment = services.request_deploy(app, user=request.user, image=data["image"] or None)
        return redirect("deployment-detail", pk=deployment.pk)

    form = DeployForm(request.POST)
    return _submit(request, app, form, deploy, field="image", deploy_form=form)


@require_POST
def scale_app_now(request: HttpRequest, pk: int) -> HttpResponse:
    """Set the app's replicas, and its live version's in the cluster."""
    app = _app_for(request, pk)
    _require(permissions.can_scale(request.user, app), "scale apps")

    def scale(data: dict[str, Any]) -> HttpResponse:
        services.scale_app(app, data["replicas"], user=request.user)
        messages.success(request, f"{app.name} scaled to {data['replicas']} replicas.")
        return redirect("app-detail", pk=app.pk)

    form = ScaleForm(request.POST)
    return _submit(request, app, form, scale, field="replicas", scale_form=form)


def _submit(
    request: HttpRequest,
    app: App,
    form: Form,
    act: Callable[[dict[str, Any]], HttpResponse],
    *,
    field: str,
    deploy_form: DeployForm | None = None,
    scale_form: ScaleForm | None = None,
) -> HttpResponse:
    """``act`` on a valid form; else, or on a refusal (shown on ``field``), the app page, 400."""
    if form.is_valid():
        try:
            return act(form.cleaned_data)
        except DeployError as exc:
            form.add_error(field, exc.message)
    return _detail_page(request, app, deploy_form=deploy_form, scale_form=scale_form, status=400)


@require_POST
def app_swap_back(request: HttpRequest, pk: int) -> HttpResponse:
    """Switch traffic back to the previous, still warm version."""
    app = _app_for(request, pk)
    _require(permissions.can_deploy(request.user, app), "swap versions")
    try:
        deployment = services.request_swap_back(app, user=request.user)
    except DeployError as exc:
        messages.error(request, exc.message)
        return redirect("app-detail", pk=app.pk)
    if deployment is None:
        messages.warning(request, "The previous version is no longer running; deploy it instead.")
        return redirect("app-detail", pk=app.pk)
    return redirect("deployment-detail", pk=deployment.pk)


@require_http_methods(["GET", "POST"])
def app_undeploy(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm, then queue the removal of every version, the frontend and the backend."""
    app = _app_for(request, pk)
    _require(permissions.can_deploy(request.user, app), "undeploy apps")
    # An empty POST is still a POST: it gets the "type the name" error, not the blank form.
    form = UndeployForm(request.POST if request.method == "POST" else None, app=app)
    if request.method == "POST" and form.is_valid():
        try:
            deployment = services.request_undeploy(app, user=request.user)
        except DeployError as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("deployment-detail", pk=deployment.pk)
    return render(
        request,
        "dashboard/app_undeploy.html",
        {"app": app, "form": form},
        status=400 if request.method == "POST" else 200,
    )


@require_GET
def app_history(request: HttpRequest, pk: int) -> HttpResponse:
    """Every deployment of the app, newest first, paginated."""
    app = _app_for(request, pk)
    return _history_page(request, app)


def _history_page(request: HttpRequest, app: App | None) -> HttpResponse:
    paginator = Paginator(queries.history(app), HISTORY_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render(
        request,
        "dashboard/history.html",
        {
            "app": app,
            "page": page,
            "can_deploy": permissions.can_deploy(request.user, app),
        },
    )
