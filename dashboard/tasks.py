"""The dashboard's Celery tasks, where the worker's autodiscovery looks for them."""

from __future__ import annotations

from dashboard.notifications.tasks import deliver, sweep

__all__ = ["deliver", "sweep"]
