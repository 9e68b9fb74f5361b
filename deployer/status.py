"""What runs in the cluster now: apps' live versions and pods, and whether a warm version is left.

The read side of the deployer, for pages and the API; deployer.services holds the writes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import TypedDict, TypeVar

from deployer.cluster import KubeCluster
from deployer.errors import KubeError
from deployer.models import App, Deployment

logger = logging.getLogger(__name__)

T = TypeVar("T")


class PodStatus(TypedDict):
    """One pod of an app as the dashboard shows it."""

    name: str
    version: int | None
    ip: str
    node: str
    phase: str
    ready: bool
    restarts: int
    reason: str
    trouble: bool  # something is wrong, not merely starting


class AppStatus(TypedDict):
    """An app's live state: live version, desired and ready replicas of it, pods, any error."""

    live_version: int | None
    desired: int
    ready: int
    pods: list[PodStatus]
    error: str


def unknown_states(apps: list[App], error: str = "") -> dict[int, AppStatus]:
    """Each app's state before the cluster is read (or when it cannot be): no pods, none ready."""
    return {
        app.pk: {
            "live_version": app.live_version,
            "desired": app.replicas if app.live_version is not None else 0,
            "ready": 0,
            "pods": [],
            "error": error,
        }
        for app in apps
    }


def _by_namespace(apps: list[App]) -> dict[str, dict[str, App]]:
    """namespace -> app name -> app."""
    grouped: dict[str, dict[str, App]] = defaultdict(dict)
    for app in apps:
        grouped[app.namespace][app.name] = app
    return grouped


def _read_namespaces(
    apps: list[App], result: dict[int, AppStatus], read: Callable[[str], T]
) -> Iterator[tuple[dict[str, App], T]]:
    """(app name -> app, ``read(namespace)``) for each namespace of ``apps`` the cluster answered.

    The apps of a namespace it did not answer for get the error in ``result``.
    """
    for namespace, names in _by_namespace(apps).items():
        try:
            data = read(namespace)
        except KubeError as exc:
            for app in names.values():
                result[app.pk]["error"] = f"cluster unreachable: {exc}"
            continue
        yield names, data


def app_status(apps: Iterable[App]) -> dict[int, AppStatus]:
    """Live state of several apps, with their pods, from one pod list per namespace."""
    apps = list(apps)
    result = unknown_states(apps)
    for names, pods in _read_namespaces(apps, result, KubeCluster().managed_pods):
        for pod in pods:
            app = names.get(pod.app)
            if app is None:
                continue
            status = result[app.pk]
            status["pods"].append(
                {
                    "name": pod.name,
                    "version": pod.version,
                    "ip": pod.ip,
                    "node": pod.node,
                    "phase": pod.phase,
                    "ready": pod.ready,
                    "restarts": pod.restarts,
                    "reason": pod.reason,
                    "trouble": pod.trouble,
                }
            )
            if pod.ready and pod.version == app.live_version:
                status["ready"] += 1
    return result


def app_readiness(apps: Iterable[App]) -> dict[int, AppStatus]:
    """Live state of several apps without their pods (empty lists): what a list page shows.

    One pod count per namespace, read without building a model per pod, so a page of
    hundreds of apps pays milliseconds, not a second, for the cluster's state.
    """
    apps = list(apps)
    result = unknown_states(apps)
    for names, ready in _read_namespaces(apps, result, KubeCluster().ready_pod_counts):
        for app in names.values():
            result[app.pk]["ready"] = ready[app.name, app.live_version]
    return result


def warm_previous_version(app: App) -> tuple[int, str] | None:
    """(version, image) of the version before the live one, when its objects still exist."""
    if app.live_version is None:
        return None
    last = (
        Deployment.objects.filter(
            app=app,
            version=app.live_version,
            status=Deployment.Status.SUCCEEDED,
            previous_version__isnull=False,
        )
        .order_by("-created_at")
        .first()
    )
    if last is None or last.previous_version is None:
        return None
    try:
        exists = KubeCluster().version_exists(app.namespace, app.name, last.previous_version)
    except KubeError:
        logger.warning("could not look up warm versions of %s", app, exc_info=True)
        return None
    if not exists:
        return None
    previous = (
        Deployment.objects.filter(app=app, version=last.previous_version)
        .exclude(kind=Deployment.Kind.UNDEPLOY)
        .order_by("-created_at")
        .first()
    )
    return last.previous_version, previous.image if previous else app.image
