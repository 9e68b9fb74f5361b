"""DRF permission: each viewset action names a role action (deployer.roles), checked per namespace.

The list and every lookup are narrowed to the namespaces the caller may see (the default
filter backend, ``dashboard.tokens.scopes.TokenNamespaceFilter``), so a detail elsewhere is
a 404; the object's namespace then decides the action itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from deployer import permissions, roles
from deployer.models import App


def object_namespace(obj: Any) -> str:
    """The namespace an object is about: an app's, its deployments', a subscription's app's.

    A subscription to every app (and its deliveries) is about every namespace: ``*``.
    """
    if isinstance(obj, App):
        return obj.namespace
    for path in ("app", "subscription"):
        inner = getattr(obj, f"{path}_id", None)
        if inner is not None:
            return object_namespace(getattr(obj, path))
        if hasattr(obj, f"{path}_id"):
            return roles.EVERY
    return roles.EVERY


def _body_namespace(request: Request, view: Any) -> str:
    """The namespace a create (or a change that moves the object) names in its body."""
    data = request.data if isinstance(request.data, Mapping) else {}
    model = getattr(getattr(view, "get_serializer_class", lambda: None)(), "Meta", None)
    model = getattr(model, "model", None)
    if model is App:
        return str(data.get("namespace") or "default")
    app = data.get("app")
    if app is not None and str(app).isdigit():
        found = App.objects.filter(pk=int(app)).values_list("namespace", flat=True).first()
        return found if found is not None else roles.EVERY
    return roles.EVERY


class ActionPermission(BasePermission):
    """Grant an action when the user's role allows ``view.action_perms[action]`` (default: view)."""

    message = "You do not have permission to do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        """May do the action where the request is about (somewhere, until the object is known)."""
        user = request.user
        action = getattr(view, "action", None)
        needed = getattr(view, "action_perms", {}).get(action, permissions.VIEW)
        if action == "create":
            return roles.allows(user, needed, _body_namespace(request, view))
        if getattr(view, "kwargs", {}).get(getattr(view, "lookup_field", "pk")) is not None:
            # About one object: its namespace decides (404 where it is unseen), in
            # has_object_permission.
            return bool(user and user.is_authenticated)
        return roles.allows_somewhere(user, needed)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        """404 outside the user's namespaces; else the action's role in the object's namespace."""
        user = request.user
        namespace = object_namespace(obj)
        action = getattr(view, "action", None)
        needed = getattr(view, "action_perms", {}).get(action, permissions.VIEW)
        if not (
            roles.allows(user, permissions.VIEW, namespace) or roles.allows(user, needed, namespace)
        ):
            raise NotFound()
        if not roles.allows(user, needed, namespace):
            return False
        data = request.data if isinstance(request.data, Mapping) else {}
        if action in ("update", "partial_update") and ("namespace" in data or "app" in data):
            return roles.allows(user, needed, _body_namespace(request, view))
        return True


class GlobalViewPermission(BasePermission):
    """Reading what serves every namespace (the load balancer fleet): a role on ``*``."""

    message = "Seeing this needs a role on every namespace (*)."

    def has_permission(self, request: Request, view: Any) -> bool:
        """Any role on ``*``."""
        return roles.allows(request.user, permissions.VIEW, roles.EVERY)


def writes(create: str, change: str = "", delete: str = "", **actions: str) -> dict[str, str]:
    """The ``action_perms`` of a ModelViewSet's create, update (PUT and PATCH) and destroy.

    ``change`` and ``delete`` default to ``create``: one action for every write.
    ``actions`` name the action of each extra route (``deploy=...``).
    """
    change, delete = change or create, delete or create
    return {
        "create": create,
        "update": change,
        "partial_update": change,
        "destroy": delete,
        **actions,
    }
