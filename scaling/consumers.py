"""The live log socket of a scaling run: stored lines after a sequence number, then the group."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from scaling.logsink import group_name, status_payload
from scaling.models import ScalingRun, ScalingRunLog
from scaling.permissions import can_view_runs

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
REPLAY_BATCH = 500


@database_sync_to_async
def _load(pk: int) -> ScalingRun | None:
    return ScalingRun.objects.filter(pk=pk).first()


@database_sync_to_async
def _may_view(user: Any) -> bool:
    return can_view_runs(user)


@database_sync_to_async
def _stored(run_id: int, after: int) -> list[dict[str, Any]]:
    lines = ScalingRunLog.objects.filter(run_id=run_id, seq__gt=after).order_by("seq")
    return [line.as_payload() for line in lines[:REPLAY_BATCH]]


@database_sync_to_async
def _status(run_id: int) -> dict[str, Any]:
    run = ScalingRun.objects.get(pk=run_id)
    return _client_status(dict(status_payload(run)))


def _after(query_string: bytes) -> int:
    values = parse_qs(query_string.decode("latin-1")).get("after", ["0"])
    try:
        return max(0, int(values[0]))
    except ValueError:
        return 0


def _client_status(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "status",
        "status": event["status"],
        "failure_reason": event.get("failure_reason", ""),
        "result": event.get("result", []),
    }


class ScalingRunLogConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/scaling/runs/<id>/?after=<seq>``: the same protocol as the deployment log socket."""

    group: str | None = None
    last_seq = 0

    async def connect(self) -> None:
        """Refuse anonymous users and users without the view permission; replay, then follow."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        run = await _load(int(self.scope["url_route"]["kwargs"]["pk"]))
        if run is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if not await _may_view(user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        # Join before reading stored lines so that nothing published in between is lost.
        self.group = group_name(run.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.last_seq = _after(self.scope.get("query_string", b""))
        while True:
            lines = await _stored(run.pk, self.last_seq)
            if lines:
                self.last_seq = lines[-1]["seq"]
                await self.send_json({"type": "lines", "lines": lines})
            if len(lines) < REPLAY_BATCH:
                break
        await self.send_json(await _status(run.pk))

    async def disconnect(self, code: int) -> None:
        """Leave the group."""
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; whatever the browser sends is ignored."""

    async def scaling_log(self, event: dict[str, Any]) -> None:
        """A new stored line: forward it unless the replay already sent it."""
        line = event["line"]
        if line["seq"] <= self.last_seq:
            return
        self.last_seq = line["seq"]
        await self.send_json({"type": "log", "line": line})

    async def scaling_status(self, event: dict[str, Any]) -> None:
        """The run's status changed."""
        await self.send_json(_client_status(event))
