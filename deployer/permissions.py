"""Who may see and change apps and deployments: roles per namespace (deployer.roles), in one place.

Every check answers through ``deployer.roles.allows`` with the namespace of the app the
request is about. A detail in a namespace the user may not see is a 404 (``visible_or_404``),
so that names do not leak.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404

from deployer import roles
from deployer.models import App, Deployment

# Action names of deployer.roles.ACTIONS (the REST API's ``action_perms`` name these).
VIEW = "view"
CHANGE = "app"
ADD = "app"
DELETE = "app"
DEPLOY = "deploy"
ABORT = "abort"
PROMOTE = "promote"
REJECT = "reject"
SCALE = "scale"
SWAP_BACK = "swap_back"
UNDEPLOY = "undeploy"


def namespace_of(target: App | Deployment | str | None) -> str | None:
    """The namespace an app, a deployment (its app's) or a namespace name is about."""
    if target is None or isinstance(target, str):
        return target
    if isinstance(target, Deployment):
        return target.app.namespace
    return target.namespace


def may(user: Any, action: str, target: App | Deployment | str | None = None) -> bool:
    """``action`` on ``target``'s namespace; without a target: in at least one namespace."""
    namespace = namespace_of(target)
    if namespace is None:
        return roles.allows_somewhere(user, action)
    return roles.allows(user, action, namespace)


def visible_or_404(user: Any, target: App | Deployment) -> None:
    """Raise Http404 unless ``user`` may see ``target`` (a 403 would tell that it exists)."""
    if not may(user, VIEW, target):
        raise Http404("No such object.")


def can_view_app(user: Any, app: App | str | None = None) -> bool:
    """True when ``user`` may see ``app`` (and its deployments and logs); without one: any app."""
    return may(user, VIEW, app)


def can_view_deployment(user: Any, deployment: Deployment) -> bool:
    """True when ``user`` may see ``deployment`` and follow its live log."""
    return may(user, VIEW, deployment)


def can_deploy(user: Any, app: App | str | None = None) -> bool:
    """True when ``user`` may deploy ``app``."""
    return may(user, DEPLOY, app)


def can_scale(user: Any, app: App | str | None = None) -> bool:
    """True when ``user`` may change ``app``'s replicas."""
    return may(user, "scale", app)


def can_change_app(user: Any, app: App | str | None = None) -> bool:
    """True when ``user`` may create, change and delete apps in ``app``'s namespace."""
    return may(user, CHANGE, app)


def can_abort(user: Any, deployment: Deployment | App | None = None) -> bool:
    """True when ``user`` may abort a deployment (of ``deployment``'s app)."""
    return may(user, ABORT, deployment)


def can_promote(user: Any, deployment: Deployment | App | None = None) -> bool:
    """True when ``user`` may promote or reject a deployment awaiting promotion."""
    return may(user, "promote", deployment)


def visible_apps(user: Any, queryset: Any = None) -> Any:
    """Apps (``queryset`` or all) in the namespaces ``user`` may see."""
    return roles.filter_visible(App.objects.all() if queryset is None else queryset, user)


def visible_deployments(user: Any, queryset: Any = None) -> Any:
    """Deployments (``queryset`` or all) of apps in the namespaces ``user`` may see."""
    base = Deployment.objects.all() if queryset is None else queryset
    return roles.filter_visible(base, user, "app__namespace")
