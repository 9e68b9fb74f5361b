"""Who may see and change apps and deployments: Django model permissions, checked in one place."""

from __future__ import annotations

from typing import Any

from deployer.models import App, Deployment

VIEW = "deployer.view_app"
CHANGE = "deployer.change_app"
ADD = "deployer.add_app"
DELETE = "deployer.delete_app"
DEPLOY = "deployer.add_deployment"
ABORT = "deployer.change_deployment"


def can_view_app(user: Any, app: App | None = None) -> bool:
    """True when ``user`` may see ``app`` (and its deployments and logs)."""
    return bool(user.is_authenticated and user.is_active and user.has_perm(VIEW))


def can_view_deployment(user: Any, deployment: Deployment) -> bool:
    """True when ``user`` may see ``deployment`` and follow its live log."""
    return can_view_app(user, deployment.app)


def can_deploy(user: Any, app: App | None = None) -> bool:
    """True when ``user`` may start, swap back, scale or undeploy ``app``."""
    return can_view_app(user, app) and user.has_perm(DEPLOY)


def can_abort(user: Any, deployment: Deployment | None = None) -> bool:
    """True when ``user`` may abort a deployment."""
    return can_view_app(user) and user.has_perm(ABORT)


def can_promote(user: Any, deployment: Deployment | None = None) -> bool:
    """True when ``user`` may promote or reject a deployment awaiting promotion (as abort)."""
    return can_abort(user, deployment)
