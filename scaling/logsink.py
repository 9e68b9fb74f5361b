"""Scaling run log lines and status: stored, then published to Channels after commit.

The same pattern as deployments: browsers fetch stored lines first, then follow the
group ``scaling-run-<id>`` from the last sequence number they have.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, TypedDict

from django.db import IntegrityError, transaction
from django.db.models import Max

from deployer.bounds import LOG_LINE_CHARS, cut_text
from deployer.logsink import publish
from scaling.models import ScalingRun, ScalingRunLog

logger = logging.getLogger(__name__)

Level = Literal["debug", "info", "warning", "error"]


class LogMessage(TypedDict):
    """``{"type": "scaling.log", "line": ScalingRunLog.as_payload()}``."""

    type: Literal["scaling.log"]
    line: dict[str, Any]


class StatusMessage(TypedDict):
    """``{"type": "scaling.status", ...}``, sent whenever a run's status changes."""

    type: Literal["scaling.status"]
    run: int
    status: str
    failure_reason: str
    result: list[Any]


def group_name(run_id: int) -> str:
    """The Channels group that follows scaling run ``run_id``."""
    return f"scaling-run-{run_id}"


def append(run_id: int, message: str, level: Level = "info") -> ScalingRunLog:
    """Store one line (cut to LOG_LINE_CHARS) with the next ``seq``; publish it after commit."""
    message = cut_text(message, LOG_LINE_CHARS)
    for _attempt in range(10):
        try:
            with transaction.atomic():
                last = ScalingRunLog.objects.filter(run_id=run_id).aggregate(last=Max("seq"))[
                    "last"
                ]
                line = ScalingRunLog.objects.create(
                    run_id=run_id, seq=(last or 0) + 1, level=level, message=message
                )
                payload: LogMessage = {"type": "scaling.log", "line": line.as_payload()}
                transaction.on_commit(
                    lambda payload=payload: publish(group_name(run_id), payload)  # type: ignore[misc]
                )
                return line
        except IntegrityError:
            continue  # another writer took this seq; read the maximum again
    raise RuntimeError(f"could not append a log line to scaling run #{run_id}")


def status_payload(run: ScalingRun) -> StatusMessage:
    """The status message for ``run`` as it is now."""
    return {
        "type": "scaling.status",
        "run": run.pk,
        "status": run.status,
        "failure_reason": run.failure_reason,
        "result": list(run.result),
    }


def status_changed(run: ScalingRun) -> None:
    """Publish ``run``'s status to its group after commit."""
    payload = status_payload(run)
    transaction.on_commit(lambda: publish(group_name(run.pk), payload))


class RunLog:
    """A run's log: each line stored, published and copied to the worker's own log."""

    def __init__(self, run: ScalingRun) -> None:
        self.run = run

    def __call__(self, level: str, message: str) -> None:
        """``log(level, message)``: the signature drain and providers call."""
        self.write(message, level=level)  # type: ignore[arg-type]

    def write(self, message: str, *, level: Level = "info") -> None:
        """Store and publish one line."""
        logger.log(logging.getLevelName(level.upper()), "scaling run #%s %s", self.run.pk, message)
        append(self.run.pk, message, level)

    def info(self, message: str) -> None:
        """An info line."""
        self.write(message, level="info")

    def warning(self, message: str) -> None:
        """A warning line."""
        self.write(message, level="warning")

    def error(self, message: str) -> None:
        """An error line."""
        self.write(message, level="error")
