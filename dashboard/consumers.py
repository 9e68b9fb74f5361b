"""The live log socket: stored lines after a sequence number, then the deployment's group."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard import permissions, queries
from deployer.logsink import group_name, status_payload
from deployer.models import Deployment

# Close codes the browser reads: do not reconnect on these.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
REPLAY_BATCH = 500


@database_sync_to_async
def _load(pk: int) -> Deployment | None:
    return Deployment.objects.select_related("app").filter(pk=pk).first()


@database_sync_to_async
def _may_view(user: Any, deployment: Deployment) -> bool:
    return permissions.can_view_deployment(user, deployment)


@database_sync_to_async
def _stored(deployment: Deployment, after: int) -> list[dict[str, Any]]:
    return queries.log_lines(deployment, after=after, limit=REPLAY_BATCH)


@database_sync_to_async
def _refresh(deployment: Deployment) -> Deployment:
    deployment.refresh_from_db(fields=["status", "steps", "failure_reason", "version"])
    return deployment


def _after(query_string: bytes) -> int:
    values = parse_qs(query_string.decode("latin-1")).get("after", ["0"])
    try:
        return max(0, int(values[0]))
    except ValueError:
        return 0


class DeploymentLogConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/deployments/<id>/?after=<seq>``: lines with a higher seq, then every new line and status.

    The consumer joins the group before reading stored lines, so nothing published in
    between is lost; lines are sent once, in seq order, whichever path brings them.
    """

    group: str | None = None
    last_seq = 0

    async def connect(self) -> None:
        """Refuse anonymous users and users who may not see the deployment; else replay, then follow."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        deployment = await _load(int(self.scope["url_route"]["kwargs"]["pk"]))
        if deployment is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if not await _may_view(user, deployment):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.group = group_name(deployment.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.last_seq = _after(self.scope.get("query_string", b""))
        while True:
            lines = await _stored(deployment, self.last_seq)
            if lines:
                self.last_seq = lines[-1]["seq"]
                await self.send_json({"type": "lines", "lines": lines})
            if len(lines) < REPLAY_BATCH:
                break
        deployment = await _refresh(deployment)
        await self.send_json(_status(status_payload(deployment)))

    async def disconnect(self, code: int) -> None:
        """Leave the group."""
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; whatever the browser sends is ignored."""

    async def deployment_log(self, event: dict[str, Any]) -> None:
        """A new stored line: forward it unless the replay already sent it."""
        line = event["line"]
        if line["seq"] <= self.last_seq:
            return
        self.last_seq = line["seq"]
        await self.send_json({"type": "log", "line": line})

    async def deployment_status(self, event: dict[str, Any]) -> None:
        """Status, steps, failure reason or version changed."""
        await self.send_json(_status(event))


def _status(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "status",
        "status": event["status"],
        "steps": event.get("steps", {}),
        "failure_reason": event.get("failure_reason", ""),
        "version": event.get("version"),
    }
