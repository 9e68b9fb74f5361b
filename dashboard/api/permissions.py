"""DRF permission: each viewset action needs one Django model permission."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from deployer import permissions


class ActionPermission(BasePermission):
    """Grant an action when the user holds ``view.action_perms[action]`` (and may view apps)."""

    message = "You do not have permission to do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        """Signed in, may view apps, and holds the permission the action names."""
        user = request.user
        if not permissions.can_view_app(user):
            return False
        action = getattr(view, "action", None)
        needed = getattr(view, "action_perms", {}).get(action, permissions.VIEW)
        return bool(user.has_perm(needed))


def writes(create: str, change: str = "", delete: str = "", **actions: str) -> dict[str, str]:
    """The ``action_perms`` of a ModelViewSet's create, update (PUT and PATCH) and destroy.

    ``change`` and ``delete`` default to ``create``: one permission for every write.
    ``actions`` name the permission of each extra action (``deploy=...``).
    """
    change, delete = change or create, delete or create
    return {
        "create": create,
        "update": change,
        "partial_update": change,
        "destroy": delete,
        **actions,
    }
