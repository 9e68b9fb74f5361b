"""Roles per namespace: who may do what, where, and how far an API token caps it.

Four roles, each including the one before: viewer < deployer < operator < admin. A
``RoleBinding`` gives a role to a user or a group in one namespace or in ``*`` (every
namespace, and the global things: node groups, cluster nodes, load balancers). A superuser
is admin on ``*``. A request made with an API token (``user.greenlight_token``) may do an
action only when the token holds the action's scope and, when the token names namespaces,
the namespace is one of them: a token never does more than its owner.
"""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Q, QuerySet

VIEWER, DEPLOYER, OPERATOR, ADMIN = "viewer", "deployer", "operator", "admin"
ROLES: tuple[str, ...] = (VIEWER, DEPLOYER, OPERATOR, ADMIN)
RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES, start=1)}
ROLE_HELP: dict[str, str] = {
    VIEWER: "see apps, deployments, logs, schedules, nodes and load balancers",
    DEPLOYER: "also deploy, abort, promote, reject, swap back, undeploy and scale apps",
    OPERATOR: "also scaling schedules, node groups and node actions (drain, cordon...)",
    ADMIN: "also create, change and delete apps, role bindings, notifications, others' tokens",
}
EVERY = "*"

# action -> (least role, token scope it needs).
ACTIONS: dict[str, tuple[str, str]] = {
    "view": (VIEWER, "read"),
    "deploy": (DEPLOYER, "deploy"),
    "abort": (DEPLOYER, "deploy"),
    "promote": (DEPLOYER, "deploy"),
    "reject": (DEPLOYER, "deploy"),
    "swap_back": (DEPLOYER, "deploy"),
    "undeploy": (DEPLOYER, "deploy"),
    "scale": (DEPLOYER, "scale"),
    "schedule": (OPERATOR, "scale"),
    "node": (OPERATOR, "scale"),
    "app": (ADMIN, "admin"),
    "roles": (ADMIN, "admin"),
    "notifications": (ADMIN, "admin"),
    "tokens": (ADMIN, "admin"),
}
# The scope each action needs, for the token checks of the API.
ACTION_SCOPES: dict[str, str] = {action: scope for action, (_, scope) in ACTIONS.items()}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CACHE = "_greenlight_role_ranks"


def valid_namespace(namespace: str) -> bool:
    """True for ``*`` and for a DNS label (what a Kubernetes namespace name is)."""
    return namespace == EVERY or (len(namespace) <= 63 and bool(_DNS_LABEL.match(namespace)))


def _token(user: Any) -> Any:
    return getattr(user, "greenlight_token", None)


def _ranks(user: Any) -> dict[str, int]:
    """namespace -> the highest role rank ``user`` holds there, directly or by a group.

    Read once per user object (a request's), as request.user's permissions are in Django.
    """
    cached = getattr(user, _CACHE, None)
    if cached is not None:
        return cached
    from deployer.models import RoleBinding

    ranks: dict[str, int] = {}
    rows = RoleBinding.objects.filter(
        Q(user_id=user.pk) | Q(group__in=user.groups.all())
    ).values_list("namespace", "role")
    for namespace, role in rows:
        ranks[namespace] = max(ranks.get(namespace, 0), RANK.get(role, 0))
    setattr(user, _CACHE, ranks)
    return ranks


def forget(user: Any) -> None:
    """Drop the bindings read for ``user`` (after its bindings changed)."""
    if hasattr(user, _CACHE):
        delattr(user, _CACHE)


def _signed_in(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active)


def _needed(action: str) -> tuple[int, str]:
    try:
        role, scope = ACTIONS[action]
    except KeyError:
        raise ValueError(
            f"Unknown action {action!r}; the actions are {', '.join(ACTIONS)}."
        ) from None
    return RANK[role], scope


def role_in(user: Any, namespace: str) -> str | None:
    """The highest role ``user`` holds in ``namespace`` (``*`` counts everywhere), or None."""
    if not _signed_in(user):
        return None
    if user.is_superuser:
        return ADMIN
    ranks = _ranks(user)
    rank = (
        ranks.get(EVERY, 0)
        if namespace == EVERY
        else max(ranks.get(EVERY, 0), ranks.get(namespace, 0))
    )
    return ROLES[rank - 1] if rank else None


def allows(user: Any, action: str, namespace: str, *, scope: str | None = None) -> bool:
    """True when ``user`` may do ``action`` in ``namespace`` (``*``: everywhere, or a global thing).

    ``scope`` replaces the token scope the action needs (``read`` to look at what only the
    action's role may see, such as role bindings).
    """
    rank, needed_scope = _needed(action)
    scope = scope or needed_scope
    if not _signed_in(user):
        return False
    token = _token(user)
    if token is not None:
        if scope not in token.scopes:
            return False
        if token.namespaces and namespace not in token.namespaces:
            return False
    role = role_in(user, namespace)
    return role is not None and RANK[role] >= rank


def visible_namespaces(
    user: Any, action: str = "view", *, scope: str | None = None
) -> frozenset[str] | None:
    """The namespaces where ``user`` may do ``action``: None for every one, else a set (maybe empty)."""
    rank, needed_scope = _needed(action)
    scope = scope or needed_scope
    if not _signed_in(user):
        return frozenset()
    token = _token(user)
    if token is not None and scope not in token.scopes:
        return frozenset()
    limit = frozenset(token.namespaces) if token is not None and token.namespaces else None
    if user.is_superuser:
        return limit
    ranks = _ranks(user)
    if ranks.get(EVERY, 0) >= rank:
        return limit
    granted = frozenset(ns for ns, held in ranks.items() if ns != EVERY and held >= rank)
    return granted if limit is None else granted & limit


def allows_somewhere(user: Any, action: str = "view", *, scope: str | None = None) -> bool:
    """True when ``user`` may do ``action`` in at least one namespace."""
    visible = visible_namespaces(user, action, scope=scope)
    return visible is None or bool(visible)


def filter_visible(
    queryset: QuerySet[Any],
    user: Any,
    field: str = "namespace",
    action: str | tuple[str, ...] = "view",
) -> QuerySet[Any]:
    """``queryset`` narrowed to the rows whose ``field`` is a namespace ``user`` may ``action`` in.

    ``action`` may name several actions: a namespace where any of them is allowed counts.
    """
    visible: frozenset[str] | None = frozenset()
    for each in (action,) if isinstance(action, str) else action:
        more = visible_namespaces(user, each)
        visible = None if visible is None or more is None else visible | more
    if visible is None:
        return queryset
    return queryset.filter(**{f"{field}__in": sorted(visible)})
