"""Sign-ins and failed sign-ins, password or single sign-on, from Django's auth signals."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed

from dashboard.audit.service import append


def _method(user: Any) -> str:
    backend = getattr(user, "backend", "") or ""
    return "sso" if ".sso." in backend or "oidc" in backend.lower() else "password"


def on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Record a sign-in, with how (password or sso)."""
    append(request, user, "login", user, method=_method(user))


def on_login_failed(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
) -> None:
    """Record a failed sign-in with the username tried (Django has already hidden the password)."""
    username = str(credentials.get("username") or "")
    method = "sso" if "sso" in credentials or not username else "password"
    append(request, username or None, "login_failed", username or None, method=method)


def connect() -> None:
    """Listen to the auth signals (once, however often it is called)."""
    user_logged_in.connect(on_login, dispatch_uid="dashboard.audit.login")
    user_login_failed.connect(on_login_failed, dispatch_uid="dashboard.audit.login_failed")
