"""What a token's scopes and namespaces let a request do: one table from route to action to scope.

The owner's own permissions are checked by each view as for any request; this only caps a
request that came with an ``ApiToken``. Reads need ``read``; each write route names the
action it does, and each action the scope it needs. A write route missing from the table
needs ``admin``, so a new route is never open to a narrower token by default.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework.filters import BaseFilterBackend
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from dashboard.notifications.models import Delivery, Subscription
from dashboard.tokens.models import ApiToken
from deployer import roles
from deployer.models import App, Deployment

# The action each write route does (names as in the role table), keyed by URL name.
WRITE_ACTIONS: dict[str, str] = {
    "api:app-list": "app",
    "api:app-detail": "app",
    "api:app-deploy": "deploy",
    "api:app-scale": "scale",
    "api:app-swap-back": "swap_back",
    "api:app-undeploy": "undeploy",
    "api:deployment-abort": "abort",
    "api:deployment-promote": "promote",
    "api:deployment-reject": "reject",
    "api:subscription-list": "notifications",
    "api:subscription-detail": "notifications",
    "api:token-list": "tokens",
    "api:token-detail": "tokens",
    "api:role-binding-list": "roles",
    "api:role-binding-detail": "roles",
    "scaling-api:app-scale": "scale",
    "scaling-api:schedule-list": "schedule",
    "scaling-api:schedule-detail": "schedule",
    "scaling-api:schedule-dry-run": "schedule",
    "scaling-api:node-group-capacity": "node",
    "scaling-api:node-group-list": "node",
    "scaling-api:node-group-detail": "node",
    "scaling-api:node-action": "node",
}
# The scope each action needs: the role table's (deployer.roles.ACTIONS).
ACTION_SCOPES: dict[str, str] = roles.ACTION_SCOPES
UNLISTED_WRITE = "admin"
# Tokens are not namespaced objects: a namespace-limited token may still manage its owner's.
UNNAMESPACED_OK = frozenset({"tokens"})
# How to find the namespace of the object a route's ``pk`` names.
APP_ROUTES = frozenset(
    {
        "api:app-detail",
        "api:app-deploy",
        "api:app-scale",
        "api:app-swap-back",
        "api:app-undeploy",
        "scaling-api:app-scale",
    }
)
DEPLOYMENT_ROUTES = frozenset(
    {"api:deployment-abort", "api:deployment-promote", "api:deployment-reject"}
)
# Which field holds the namespace, for the lists a namespace-limited token sees.
NAMESPACE_FIELDS: dict[type[Any], str] = {
    App: "namespace",
    Deployment: "app__namespace",
    Subscription: "app__namespace",
    Delivery: "subscription__app__namespace",
}


def request_token(request: Any) -> ApiToken | None:
    """The token the request authenticated with, or None (session, the old DRF token)."""
    return getattr(getattr(request, "user", None), "greenlight_token", None)


def route_name(request: Request) -> str:
    """``namespace:url_name`` of the route the request resolved to."""
    match = request.resolver_match
    return match.view_name if match is not None else ""


def scope_needed(method: str, route: str) -> tuple[str, str]:
    """(action, scope) a request of ``method`` on ``route`` needs."""
    if method in SAFE_METHODS:
        return "view", ACTION_SCOPES["view"]
    action = WRITE_ACTIONS.get(route, "")
    return action, ACTION_SCOPES.get(action, UNLISTED_WRITE)


def _target_namespace(request: Request, route: str) -> str | None:
    """The namespace of the app the write is about, when the route is about one."""
    pk = (request.resolver_match.kwargs if request.resolver_match else {}).get("pk")
    body = request.data if route in ("api:app-list", "api:app-detail") else {}
    named = body.get("namespace") if hasattr(body, "get") else None
    if route == "api:app-list":
        return str(named or App._meta.get_field("namespace").default)
    if named and route == "api:app-detail":
        return str(named)
    if route in APP_ROUTES and str(pk).isdigit():
        return App.objects.filter(pk=pk).values_list("namespace", flat=True).first() or ""
    if route in DEPLOYMENT_ROUTES and str(pk).isdigit():
        rows = Deployment.objects.filter(pk=pk).values_list("app__namespace", flat=True)
        return rows.first() or ""
    return None


def refusal(token: ApiToken, request: Request) -> str | None:
    """Why ``token`` may not make ``request``, or None when its scopes and namespaces allow it."""
    route = route_name(request)
    action, scope = scope_needed(request.method or "GET", route)
    if scope not in token.scopes:
        what = f"{request.method} {request.path}"
        return (
            f"The token {token.name!r} has the scopes {', '.join(token.scopes)}; {what} needs "
            f"the {scope} scope."
        )
    if not token.namespaces or request.method in SAFE_METHODS or action in UNNAMESPACED_OK:
        return None
    namespace = _target_namespace(request, route)
    limited = ", ".join(token.namespaces)
    if namespace is None:
        return (
            f"The token {token.name!r} is limited to the namespaces {limited}; "
            f"{request.method} {request.path} is not about one namespace."
        )
    if namespace and namespace not in token.namespaces:
        return f"The token {token.name!r} is limited to the namespaces {limited}, not {namespace}."
    return None


class TokenScopePermission(BasePermission):
    """Refuse a token request its scopes or namespaces do not cover (others always pass)."""

    message = "This token may not do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        """True without a token; otherwise what ``refusal`` says."""
        token = request_token(request)
        if token is None:
            return True
        reason = refusal(token, request)
        if reason is not None:
            self.message = reason
        return reason is None


class TokenNamespaceFilter(BaseFilterBackend):
    """Lists and lookups see only the namespaces the caller's roles (capped by its token) show."""

    def filter_queryset(
        self, request: Request, queryset: QuerySet[Any], view: Any
    ) -> QuerySet[Any]:
        """``queryset`` narrowed by ``deployer.roles.filter_visible``, when it has a namespace field."""
        field = NAMESPACE_FIELDS.get(queryset.model)
        if field is None:
            return queryset
        needed = getattr(view, "action_perms", {}).get(getattr(view, "action", None), "view")
        return roles.filter_visible(queryset, request.user, field, ("view", needed))
