"""Events a user may want to hear about, announced in one place.

The deployer and the scaler call :func:`emit` when something a user subscribes to happens
(a deploy started, awaits promotion, failed; a scaling run failed; a load balancer refused
a configuration). :data:`event_emitted` carries it to whoever listens (the dashboard's
notifications), so neither package imports the dashboard. Emitting never raises and
never blocks the caller: a listener's failure is logged, and the run goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger(__name__)

# Event name -> what a subscriber sees in the list of events.
EVENTS: dict[str, str] = {
    "queued": "Deploy queued",
    "started": "Deploy started",
    "awaiting_promotion": "Awaiting promotion",
    "succeeded": "Deploy succeeded",
    "failed": "Deploy failed",
    "rolled_back": "Rolled back",
    "aborted": "Deploy aborted",
    "guard_swap_back": "Guard swapped back",
    "scaling_run_failed": "Scaling run failed",
    "drain_stuck": "Drain stuck",
    "lb_refused_config": "Load balancer refused a configuration",
}

# Sent with ``event`` (a key of EVENTS), ``message`` (one line for a human) and the
# optional ``app``, ``deployment``, ``scaling_run`` and ``details`` (a JSON-able dict).
event_emitted = Signal()


def emit(
    event: str,
    message: str,
    *,
    app: Any = None,
    deployment: Any = None,
    scaling_run: Any = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Announce ``event``; listeners' errors are logged, never raised."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}: one of {', '.join(EVENTS)}")
    if app is None and deployment is not None:
        app = deployment.app
    results = event_emitted.send_robust(
        sender=emit,
        event=event,
        message=message,
        app=app,
        deployment=deployment,
        scaling_run=scaling_run,
        details=details or {},
    )
    for receiver, result in results:
        if isinstance(result, Exception):
            logger.warning(
                "A listener of event %s (%s) failed: %s",
                event,
                getattr(receiver, "__qualname__", receiver),
                result,
                exc_info=result,
            )
