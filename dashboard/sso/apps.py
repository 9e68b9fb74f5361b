"""The single sign-on Django app (label ``sso``): identities and the sign-in pages."""

from __future__ import annotations

from django.apps import AppConfig


class SsoConfig(AppConfig):
    """Holds the provider identities of users who signed in through OpenID Connect."""

    name = "dashboard.sso"
    label = "sso"
    verbose_name = "Single sign-on"
    default_auto_field = "django.db.models.BigAutoField"
