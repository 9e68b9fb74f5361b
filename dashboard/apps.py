"""The dashboard's Django app: on start it subscribes the notifications to deployer.events."""

from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Connects dashboard.notifications.listener.on_event to deployer.events.event_emitted."""

    name = "dashboard"

    def ready(self) -> None:
        """Listen to every emitted event (once, however often ready() runs)."""
        from dashboard.notifications.listener import on_event
        from deployer.events import event_emitted

        event_emitted.connect(on_event, dispatch_uid="dashboard.notifications")
