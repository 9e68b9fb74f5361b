"""The live log socket protocol shared by deployments (dashboard) and scaling runs (scaling).

A browser connects with ``?after=<seq>``; the consumer joins the object's group
*before* reading stored lines, so nothing published in between is lost, replays the
stored lines after ``seq`` in batches, sends the current status, then forwards new
lines (each once, in seq order, whichever path brings it) and status changes.

A status read from the database can be newer than group messages still on their way
(the writer publishes after commit, from a queue), so once a terminal status was sent
nothing else is: a finished run never appears to run again.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

# Close codes the browser reads: do not reconnect on these.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
REPLAY_BATCH = 500

T = TypeVar("T")


# The largest integer a database column holds (SQLite INTEGER, PostgreSQL bigint): ids
# and sequence numbers beyond it match nothing, and must not reach a query as they are.
MAX_DB_INT = 2**63 - 1


def parse_after(value: str | None) -> int:
    """An ``after`` sequence number from a query: clamped to 0..MAX_DB_INT; ValueError if garbage."""
    return min(max(0, int(value or "0")), MAX_DB_INT)


def after_from_query(query_string: bytes) -> int:
    """The ``after`` sequence number of a socket's query string; 0 when absent or garbage."""
    values = parse_qs(query_string.decode("latin-1")).get("after", ["0"])
    try:
        return parse_after(values[0])
    except ValueError:
        return 0


class LiveLogConsumer(AsyncJsonWebsocketConsumer, Generic[T], metaclass=ABCMeta):
    """Replay stored lines after a seq, then follow the object's Channels group.

    Subclasses supply the synchronous database hooks below and name their group
    message handlers (``<type>_log`` calls :meth:`forward_line`, ``<type>_status``
    calls :meth:`forward_status`).
    """

    group: str | None = None
    last_seq = 0
    finished = False

    @property
    @abstractmethod
    def terminal(self) -> frozenset[str]:
        """The statuses after which an object never changes status again."""

    @abstractmethod
    def load(self, pk: int) -> T | None:
        """The object with primary key ``pk``, or None."""

    @abstractmethod
    def may_view(self, user: Any, obj: T) -> bool:
        """Whether ``user`` may follow ``obj``."""

    @abstractmethod
    def group_for(self, obj: T) -> str:
        """The Channels group ``obj``'s lines and statuses are published to."""

    @abstractmethod
    def stored_lines(self, obj: T, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` stored line payloads with seq greater than ``after``, in order."""

    @abstractmethod
    def current_status(self, obj: T) -> dict[str, Any]:
        """The status message for ``obj`` as it is now, in the shape of a group status event."""

    @abstractmethod
    def client_status(self, event: dict[str, Any]) -> dict[str, Any]:
        """The ``{"type": "status", ...}`` message the browser receives for a status event."""

    async def connect(self) -> None:
        """Refuse anonymous users and users who may not see the object; else replay, then follow."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        obj = await database_sync_to_async(self.load)(int(self.scope["url_route"]["kwargs"]["pk"]))
        if obj is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if not await database_sync_to_async(self.may_view)(user, obj):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.group = self.group_for(obj)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.last_seq = after_from_query(self.scope.get("query_string", b""))
        stored = database_sync_to_async(self.stored_lines)
        while True:
            lines = await stored(obj, self.last_seq, REPLAY_BATCH)
            if lines:
                self.last_seq = lines[-1]["seq"]
                await self.send_json({"type": "lines", "lines": lines})
            if len(lines) < REPLAY_BATCH:
                break
        status = await database_sync_to_async(self.current_status)(obj)
        await self.send_status(status)

    async def disconnect(self, code: int) -> None:
        """Leave the group."""
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; whatever the browser sends is ignored."""

    async def forward_line(self, event: dict[str, Any]) -> None:
        """A new stored line: forward it unless the replay already sent it."""
        line = event["line"]
        if line["seq"] <= self.last_seq:
            return
        self.last_seq = line["seq"]
        await self.send_json({"type": "log", "line": line})

    async def forward_status(self, event: dict[str, Any]) -> None:
        """A status change: forward it in the browser's shape."""
        await self.send_status(event)

    async def send_status(self, event: dict[str, Any]) -> None:
        """Send a status unless a terminal one was already sent (anything later is stale)."""
        if self.finished:
            return
        self.finished = event["status"] in self.terminal
        await self.send_json(self.client_status(event))
