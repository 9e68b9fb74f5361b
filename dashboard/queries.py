"""Read-side queries of the dashboard, each a fixed number of SQL queries whatever the history size."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypedDict

from django.db.models import OuterRef, QuerySet, Subquery
from django.urls import reverse
from django.utils import timezone

from dashboard.templatetags.greenlight import ago, frontend_url
from deployer.errors import KubeError
from deployer.models import App, Deployment, DeploymentLog
from deployer.status import (
    AppStatus,
    app_readiness,
    app_status,
    unknown_states,
    warm_previous_version,
)

logger = logging.getLogger(__name__)

CHART_SIZE = 20
RECENT_SIZE = 10
# The deployment page renders this many stored lines; the browser fetches the rest.
PAGE_LOG_LINES = 2000


def apps_with_last_deployment(namespace: str | None = None) -> QuerySet[App]:
    """Apps annotated with their latest deployment's id, status, version and time (one query)."""
    latest = Deployment.objects.filter(app=OuterRef("pk")).order_by("-created_at", "-id")
    apps = App.objects.annotate(
        last_id=Subquery(latest.values("id")[:1]),
        last_status=Subquery(latest.values("status")[:1]),
        last_version=Subquery(latest.values("version")[:1]),
        last_created=Subquery(latest.values("created_at")[:1]),
        last_kind=Subquery(latest.values("kind")[:1]),
    )
    if namespace:
        apps = apps.filter(namespace=namespace)
    return apps.order_by("namespace", "name")


class AppRow(TypedDict):
    """One line of the app list, with its links and texts worked out once.

    A list of hundreds of apps renders in a fraction of the time when the template only
    prints values (a dict: the template's first lookup finds them) instead of reversing
    URLs and branching for every row.
    """

    pk: int
    name: str
    namespace: str
    image: str
    frontend: str
    url: str
    frontend_url: str
    live_version: int | None
    replicas: str  # ready / desired of the live version, "?" when the cluster did not say
    replicas_class: str  # ok, warn or muted
    error: str
    last_url: str  # "" when the app was never deployed
    last_status: str
    last: str  # "v3 · 5 min ago"


def app_rows(apps: list[App], states: dict[int, AppStatus]) -> list[AppRow]:
    """The app list's rows for apps from ``apps_with_last_deployment`` and their live states."""
    rows = []
    for app in apps:
        live = states[app.pk]
        if not live["live_version"]:
            replicas, css = f"– / {app.replicas}", "muted"
        elif live["error"]:
            replicas, css = f"? / {live['desired']}", "muted"
        else:
            replicas = f"{live['ready']} / {live['desired']}"
            css = "warn" if live["ready"] < live["desired"] else "ok"
        last_id = getattr(app, "last_id", None)
        last_version = getattr(app, "last_version", None)
        last = ago(getattr(app, "last_created", None))
        rows.append(
            AppRow(
                pk=app.pk,
                name=app.name,
                namespace=app.namespace,
                image=app.image,
                frontend=app.frontend,
                url=reverse("app-detail", args=[app.pk]),
                frontend_url=frontend_url(app.frontend),
                live_version=live["live_version"],
                replicas=replicas,
                replicas_class=css,
                error=live["error"],
                last_url=reverse("deployment-detail", args=[last_id]) if last_id else "",
                last_status=getattr(app, "last_status", None) or "",
                last=f"v{last_version} · {last}" if last_version else last,
            )
        )
    return rows


def namespaces() -> list[str]:
    """Every namespace that holds an app, sorted."""
    return list(App.objects.order_by("namespace").values_list("namespace", flat=True).distinct())


def history(app: App | None = None) -> QuerySet[Deployment]:
    """Deployments newest first with what a history row shows, without per-row queries."""
    rows = Deployment.objects.select_related("app", "triggered_by").defer(
        "descriptor", "health_results", "steps", "app__env", "app__extra_pod_spec"
    )
    if app is not None:
        rows = rows.filter(app=app)
    return rows.order_by("-created_at", "-id")


def active_deployment(app: App) -> Deployment | None:
    """The app's queued or running deployment, oldest first (the one that holds the lock)."""
    return (
        Deployment.objects.filter(app=app)
        .exclude(status__in=Deployment.TERMINAL)
        .order_by("created_at", "id")
        .first()
    )


@dataclass(frozen=True)
class ChartPoint:
    """One bar of the recent-deploys chart."""

    id: int
    version: int | None
    status: str
    seconds: float | None
    url: str

    def as_json(self) -> dict[str, Any]:
        """The shape static/js/chart.js reads."""
        return {
            "id": self.id,
            "version": self.version,
            "status": self.status,
            "seconds": self.seconds,
            "url": self.url,
        }


def chart_points(recent: list[Deployment]) -> list[dict[str, Any]]:
    """Recent deploys, oldest first, for the chart (running ones count their time so far)."""
    now = timezone.now()
    points = []
    for row in reversed(recent):
        seconds = row.duration_seconds
        if seconds is None and row.started_at is not None:
            seconds = (now - row.started_at).total_seconds()
        points.append(
            ChartPoint(
                id=row.pk,
                version=row.version,
                status=row.status,
                seconds=round(seconds, 2) if seconds is not None else None,
                url=reverse("deployment-detail", args=[row.pk]),
            ).as_json()
        )
    return points


def known_images(app: App | None = None, limit: int = 30) -> list[str]:
    """Images used before (this app's first), most recent first, for the image completion list."""
    seen: dict[str, None] = {}
    if app is not None:
        seen[app.image] = None
        for image in (
            Deployment.objects.filter(app=app)
            .order_by("-created_at")
            .values_list("image", flat=True)[:200]
        ):
            seen.setdefault(image, None)
    for image in App.objects.order_by("-updated_at").values_list("image", flat=True)[:limit]:
        seen.setdefault(image, None)
    return [image for image in seen if image][:limit]


def log_lines(
    deployment: Deployment, after: int = 0, limit: int = PAGE_LOG_LINES
) -> list[dict[str, Any]]:
    """Stored log lines after ``after`` in order, at most ``limit``, as payload dicts."""
    rows = DeploymentLog.objects.filter(deployment=deployment, seq__gt=after).order_by("seq")
    return [line.as_payload() for line in rows[:limit]]


def live_states(apps: list[App], *, pods: bool = True) -> dict[int, AppStatus]:
    """Each app's live state, with its pods unless ``pods`` is False (a list page's counts).

    An app gets an 'unknown' state when the cluster cannot be reached.
    """
    try:
        return app_status(apps) if pods else app_readiness(apps)
    except KubeError as exc:
        logger.warning("cluster state unavailable: %s", exc)
        return unknown_states(apps, f"cluster unreachable: {exc}")


def warm_version(app: App) -> tuple[int, str] | None:
    """The previous version when it still runs (Swap back is possible), None when unknown."""
    if app.live_version is None:
        return None
    try:
        return warm_previous_version(app)
    except KubeError:
        return None
