"""The dashboard's Django app: on start it subscribes the notifications to deployer.events."""

from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Connects the notifications to deployer.events and the audit trail to the sign-in signals."""

    name = "dashboard"

    def ready(self) -> None:
        """Listen to every emitted event (once, however often ready() runs)."""
        from dashboard.audit import signals as audit_signals
        from dashboard.notifications.listener import on_event
        from deployer.events import event_emitted

        event_emitted.connect(on_event, dispatch_uid="dashboard.notifications")
        audit_signals.connect()
