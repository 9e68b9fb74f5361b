"""Deployment log lines and status changes: stored, then published to Channels after commit.

Browsers first fetch the stored lines, then follow the group ``deployment-<id>`` from
the last sequence number, so a message published twice or late loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from django.db import IntegrityError, transaction
from django.db.models import Max

from deployer.bounds import LOG_LINE_CHARS, cut_text
from deployer.models import Deployment, DeploymentLog

logger = logging.getLogger(__name__)

Level = Literal["debug", "info", "warning", "error"]


class LogMessage(TypedDict):
    """``{"type": "deployment.log", "line": DeploymentLog.as_payload()}``."""

    type: Literal["deployment.log"]
    line: dict[str, Any]


class StatusMessage(TypedDict):
    """``{"type": "deployment.status", ...}``, sent whenever status or steps change."""

    type: Literal["deployment.status"]
    deployment: int
    status: str
    steps: dict[str, Any]
    failure_reason: str
    version: int | None


def group_name(deployment_id: int) -> str:
    """The Channels group that follows deployment ``deployment_id``."""
    return f"deployment-{deployment_id}"


class _Publisher:
    """One background event loop per process that sends group messages in order.

    ``async_to_sync`` would build a new loop, and so a new Redis connection, per line;
    a single loop keeps one connection and preserves the order of lines.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, Mapping[str, Any]] | None] | None = None
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    def _ensure(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]:
        # Celery's prefork pool forks after import: a thread from the parent does not exist here.
        if self._loop is None or self._pid != os.getpid():
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            holder: dict[str, Any] = {}

            def run() -> None:
                asyncio.set_event_loop(loop)
                holder["queue"] = asyncio.Queue()
                loop.create_task(self._drain(holder["queue"]))
                ready.set()
                loop.run_forever()

            threading.Thread(target=run, name="deployment-log-publisher", daemon=True).start()
            ready.wait()
            self._loop, self._queue, self._pid, self._pending = (
                loop,
                holder["queue"],
                os.getpid(),
                0,
            )
        assert self._queue is not None
        return self._loop, self._queue

    async def _drain(self, queue: asyncio.Queue[Any]) -> None:
        from channels.layers import get_channel_layer

        while True:
            group, message = await queue.get()
            try:
                layer = get_channel_layer()
                if layer is not None:
                    await layer.group_send(group, dict(message))
            except Exception:
                # A lost live message is recovered by the browser from stored lines.
                logger.warning("could not publish to %s", group, exc_info=True)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def send(self, group: str, message: Mapping[str, Any]) -> None:
        """Queue ``message`` for ``group``; returns at once."""
        with self._lock:
            loop, queue = self._ensure()
            self._pending += 1
        loop.call_soon_threadsafe(queue.put_nowait, (group, message))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued message was sent; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending <= 0, timeout)


_publisher = _Publisher()


def publish(group: str, message: Mapping[str, Any]) -> None:
    """Send ``message`` to the Channels ``group`` from a background loop (the patchable seam)."""
    _publisher.send(group, message)


def flush(timeout: float = 5.0) -> bool:
    """Wait until published messages left this process; True when all were sent."""
    return _publisher.flush(timeout)


def _publish_on_commit(group: str, message: Mapping[str, Any]) -> None:
    transaction.on_commit(lambda: publish(group, message))


def append(
    deployment: Deployment | int, message: str, *, level: Level = "info", step: str = ""
) -> DeploymentLog:
    """Store one log line (cut to LOG_LINE_CHARS) with the next ``seq``; publish it after commit."""
    deployment_id = deployment if isinstance(deployment, int) else deployment.pk
    message = cut_text(message, LOG_LINE_CHARS)
    for _attempt in range(10):
        try:
            with transaction.atomic():
                last = DeploymentLog.objects.filter(deployment_id=deployment_id).aggregate(
                    last=Max("seq")
                )["last"]
                line = DeploymentLog.objects.create(
                    deployment_id=deployment_id,
                    seq=(last or 0) + 1,
                    level=level,
                    step=step,
                    message=message,
                )
                payload: LogMessage = {"type": "deployment.log", "line": line.as_payload()}
                _publish_on_commit(group_name(deployment_id), payload)
                return line
        except IntegrityError:
            continue  # another writer took this seq; read the maximum again
    raise RuntimeError(f"could not append a log line to deployment #{deployment_id}")


def status_payload(deployment: Deployment) -> StatusMessage:
    """The status message for ``deployment`` as it is now."""
    return {
        "type": "deployment.status",
        "deployment": deployment.pk,
        "status": deployment.status,
        "steps": dict(deployment.steps),
        "failure_reason": deployment.failure_reason,
        "version": deployment.version,
    }


def status_changed(deployment: Deployment) -> None:
    """Publish ``deployment``'s status and steps to its group after commit."""
    _publish_on_commit(group_name(deployment.pk), status_payload(deployment))


class DbLogSink:
    """The workflow's log sink backed by DeploymentLog and Channels."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    def log(self, message: str, *, level: Level = "info", step: str = "") -> None:
        """Store and publish one line; also sent to the worker's own log."""
        logger.log(
            logging.getLevelName(level.upper()),
            "deployment #%s [%s] %s",
            self.deployment.pk,
            step,
            message,
        )
        append(self.deployment, message, level=level, step=step)

    def status(self) -> None:
        """Publish the deployment's current status and steps."""
        status_changed(self.deployment)
