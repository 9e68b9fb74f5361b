"""Who may change schedules and start scaling runs: Django model permissions in one place."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied

from deployer.permissions import DEPLOY as SCALE_APPS

VIEW = "scaling.view_schedule"
VIEW_RUNS = "scaling.view_scalingrun"
EDIT_SCHEDULES = "scaling.change_schedule"
EDIT_NODE_GROUPS = "scaling.change_nodegroup"
RUN = "scaling.add_scalingrun"


def can_view(user: Any) -> bool:
    """True when ``user`` may see schedules, node groups and nodes."""
    return bool(user.is_authenticated and user.is_active and user.has_perm(VIEW))


def can_view_runs(user: Any) -> bool:
    """True when ``user`` may see scaling runs and follow their logs."""
    return bool(user.is_authenticated and user.is_active and user.has_perm(VIEW_RUNS))


def can_edit_schedules(user: Any) -> bool:
    """True when ``user`` may create, change and delete schedules."""
    return bool(user.is_authenticated and user.has_perm(EDIT_SCHEDULES))


def can_edit_node_groups(user: Any) -> bool:
    """True when ``user`` may create and change node groups."""
    return bool(user.is_authenticated and user.has_perm(EDIT_NODE_GROUPS))


def can_run(user: Any) -> bool:
    """True when ``user`` may start manual scaling runs and dry runs."""
    return bool(user.is_authenticated and user.has_perm(RUN))


def can_scale_apps(user: Any) -> bool:
    """True when ``user`` may start runs that change an app's replicas.

    Scaling an app is a deploy-level action wherever it starts (the app page, the API,
    a manual run, a schedule), so it needs ``deployer.add_deployment`` besides the run
    permission.
    """
    return can_run(user) and bool(user.has_perm(SCALE_APPS))


def require(allowed: bool, what: str) -> None:
    """Raise PermissionDenied (403) with a message unless ``allowed``."""
    if not allowed:
        raise PermissionDenied(f"You may not {what}; ask an administrator for the permission.")
