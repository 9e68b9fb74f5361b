"""Django app configuration for the deployer."""

from __future__ import annotations

from django.apps import AppConfig


class DeployerConfig(AppConfig):
    """The deployer app."""

    name = "deployer"
    default_auto_field = "django.db.models.BigAutoField"
