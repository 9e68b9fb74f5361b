"""Who may see and change scaling: roles on ``*`` (deployer.roles), checked in one place.

Schedules, node groups, cluster nodes and runs act on the cluster as a whole, so they need
a role bound on every namespace (``*``): viewer to see them, operator to change schedules
and node groups and to act on nodes. Scaling one app is a deployer's action in the app's
namespace, wherever it starts.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied

from deployer import roles

# Action names of deployer.roles.ACTIONS (the REST API's ``action_perms`` name these).
VIEW = "view"
VIEW_RUNS = "view"
EDIT_SCHEDULES = "schedule"
EDIT_NODE_GROUPS = "node"
RUN = "schedule"


def allows_global(user: Any, action: str) -> bool:
    """``action`` on the cluster as a whole: a role on ``*``."""
    return roles.allows(user, action, roles.EVERY)


def can_view(user: Any) -> bool:
    """True when ``user`` may see schedules, node groups and nodes."""
    return allows_global(user, VIEW)


def can_view_runs(user: Any) -> bool:
    """True when ``user`` may see scaling runs and follow their logs."""
    return allows_global(user, VIEW_RUNS)


def can_edit_schedules(user: Any) -> bool:
    """True when ``user`` may create, change and delete schedules."""
    return allows_global(user, EDIT_SCHEDULES)


def can_edit_node_groups(user: Any) -> bool:
    """True when ``user`` may create and change node groups."""
    return allows_global(user, EDIT_NODE_GROUPS)


def can_run(user: Any) -> bool:
    """True when ``user`` may start manual scaling runs, dry runs and node actions."""
    return allows_global(user, RUN)


def can_scale_apps(user: Any, app: Any = None) -> bool:
    """True when ``user`` may change ``app``'s replicas (without one: every app's, for schedules).

    Scaling an app is a deployer's action in its namespace wherever it starts (the app page,
    the API, a manual run); a schedule may scale any app, so it needs the role on ``*``.
    """
    namespace = roles.EVERY if app is None else app.namespace
    return roles.allows(user, "scale", namespace)


def require(allowed: bool, what: str) -> None:
    """Raise PermissionDenied (403) with a message unless ``allowed``."""
    if not allowed:
        raise PermissionDenied(f"You may not {what}; ask an administrator for a role.")
