"""Live logs: lines stored in order, then published to Channels after commit, with status changes.

One :class:`LogStream` per kind of owner (deployments here, scaling runs in
scaling.logsink) over a concrete :class:`~deployer.models.LogLine` model. Browsers
first fetch the stored lines, then follow the owner's group from the last sequence
number (deployer.livelog), so a message published twice or late loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypedDict, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import Max

from deployer.bounds import LOG_LINE_CHARS, cut_text
from deployer.models import Deployment, DeploymentLog, Lifecycle, LogLine

logger = logging.getLogger(__name__)

Level = Literal["debug", "info", "warning", "error"]
Owner = TypeVar("Owner", bound=Lifecycle)


class LogMessage(TypedDict):
    """``{"type": "<kind>.log", "line": LogLine.as_payload()}``."""

    type: str
    line: dict[str, Any]


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


@dataclass(frozen=True)
class LogStream(Generic[Owner]):
    """The log of one kind of owner: ``<kind>.log`` and ``<kind>.status`` messages to its group."""

    kind: str
    group_prefix: str
    line_model: type[LogLine]
    # The status message's fields besides its type.
    status_fields: Callable[[Owner], dict[str, Any]]

    def group_name(self, owner_id: int) -> str:
        """The Channels group that follows owner ``owner_id``: ``<group_prefix>-<id>``."""
        return f"{self.group_prefix}-{owner_id}"

    def append(
        self,
        owner: Owner | int,
        message: str,
        *,
        level: Level = "info",
        step: str = "",
        after: int | None = None,
    ) -> LogLine:
        """Store one line (cut to LOG_LINE_CHARS) with the next ``seq``; publish it after commit.

        ``after``: the ``seq`` this writer stored last, if it knows it: ``after + 1`` is
        tried first without reading the highest one (a writer mostly writes alone).
        """
        owner_id = owner if isinstance(owner, int) else owner.pk
        message = cut_text(message, LOG_LINE_CHARS)
        owner_key = f"{self.line_model.owner_field}_id"
        lines = self.line_model.objects.filter(**{owner_key: owner_id})  # type: ignore[attr-defined]
        for attempt in range(10):
            try:
                with transaction.atomic():
                    if attempt == 0 and after is not None:
                        last = after
                    else:
                        last = lines.aggregate(last=Max("seq"))["last"]
                    line = self.line_model.objects.create(  # type: ignore[attr-defined]
                        **{owner_key: owner_id},
                        seq=(last or 0) + 1,
                        level=level,
                        step=step,
                        message=message,
                    )
                    payload: LogMessage = {"type": f"{self.kind}.log", "line": line.as_payload()}
                    _publish_on_commit(self.group_name(owner_id), payload)
                    return line
            except IntegrityError:
                continue  # another writer took this seq; read the maximum again
        raise RuntimeError(f"could not append a log line to {self.kind} #{owner_id}")

    def status_payload(self, owner: Owner) -> dict[str, Any]:
        """The status message for ``owner`` as it is now."""
        return {"type": f"{self.kind}.status", **self.status_fields(owner)}

    def status_changed(self, owner: Owner) -> None:
        """Publish ``owner``'s status to its group after commit."""
        _publish_on_commit(self.group_name(owner.pk), self.status_payload(owner))


class LogSink(Protocol):
    """Where a run's log lines and status changes go (an OwnerLog in production)."""

    def log(self, message: str, *, level: Level = "info", step: str = "") -> None: ...
    def status(self) -> None: ...


class OwnerLog(Generic[Owner]):
    """One owner's log: each line stored, published and copied to the worker's own log."""

    def __init__(self, stream: LogStream[Owner], owner: Owner) -> None:
        self.stream = stream
        self.owner = owner
        # The seq of the last line this log stored: the next one usually follows it.
        self._last_seq: int | None = None

    def log(self, message: str, *, level: Level = "info", step: str = "") -> None:
        """Store and publish one line; also sent to the worker's own log."""
        logger.log(
            logging.getLevelName(level.upper()),
            "%s #%s [%s] %s",
            self.owner.noun,
            self.owner.pk,
            step,
            message,
        )
        line = self.stream.append(self.owner, message, level=level, step=step, after=self._last_seq)
        self._last_seq = line.seq

    def status(self) -> None:
        """Publish the owner's current status."""
        self.stream.status_changed(self.owner)


def level_first(sink: LogSink, step: str = "") -> Callable[[str, str], None]:
    """``log(level, message)`` onto ``sink``: the shape rotation, drains and scale-downs take."""
    return lambda level, message: sink.log(message, level=level, step=step)  # type: ignore[arg-type]


class DeploymentStatus(TypedDict):
    """The fields of ``deployment.status``, sent whenever a deployment's status or steps change."""

    deployment: int
    status: str
    steps: dict[str, Any]
    failure_reason: str
    version: int | None
    # While awaiting promotion: when it is rejected unless promoted (ISO 8601, UTC).
    promotion_deadline: str | None


def _deployment_status(deployment: Deployment) -> dict[str, Any]:
    deadline = deployment.promotion_deadline
    fields: DeploymentStatus = {
        "deployment": deployment.pk,
        "status": deployment.status,
        "steps": dict(deployment.steps),
        "failure_reason": deployment.failure_reason,
        "version": deployment.version,
        "promotion_deadline": deadline.isoformat() if deadline else None,
    }
    return dict(fields)


DEPLOYMENTS: LogStream[Deployment] = LogStream(
    kind="deployment",
    group_prefix="deployment",
    line_model=DeploymentLog,
    status_fields=_deployment_status,
)
append = DEPLOYMENTS.append
group_name = DEPLOYMENTS.group_name
status_payload = DEPLOYMENTS.status_payload
status_changed = DEPLOYMENTS.status_changed


def deployment_log(deployment: Deployment) -> OwnerLog[Deployment]:
    """The workflow's log sink for ``deployment``."""
    return OwnerLog(DEPLOYMENTS, deployment)
