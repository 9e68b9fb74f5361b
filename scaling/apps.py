"""Django app configuration for scaling."""

from __future__ import annotations

from django.apps import AppConfig


class ScalingConfig(AppConfig):
    """The scaling app."""

    name = "scaling"
    default_auto_field = "django.db.models.BigAutoField"
