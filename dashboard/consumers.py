"""The deployment log socket: stored lines after a sequence number, then the deployment's group."""

from __future__ import annotations

from typing import Any

from dashboard import queries
from deployer import permissions
from deployer.livelog import LiveLogConsumer
from deployer.logsink import group_name, status_payload
from deployer.models import Deployment


class DeploymentLogConsumer(LiveLogConsumer[Deployment]):
    """``/ws/deployments/<id>/?after=<seq>``: lines with a higher seq, then every new line and status."""

    terminal = Deployment.TERMINAL

    def load(self, pk: int) -> Deployment | None:
        """The deployment with its app, or None."""
        return Deployment.objects.select_related("app").filter(pk=pk).first()

    def may_view(self, user: Any, obj: Deployment) -> bool:
        """Users with view permission on the deployment."""
        return permissions.can_view_deployment(user, obj)

    def group_for(self, obj: Deployment) -> str:
        return group_name(obj.pk)

    def stored_lines(self, obj: Deployment, after: int, limit: int) -> list[dict[str, Any]]:
        return queries.log_lines(obj, after=after, limit=limit)

    def current_status(self, obj: Deployment) -> dict[str, Any]:
        """The deployment's status as published after each change."""
        obj.refresh_from_db(
            fields=["status", "steps", "failure_reason", "version", "awaiting_since"]
        )
        return dict(status_payload(obj))

    def client_status(self, event: dict[str, Any]) -> dict[str, Any]:
        """Status, steps, failure reason, version and, awaiting promotion, its deadline."""
        return {
            "type": "status",
            "status": event["status"],
            "steps": event.get("steps", {}),
            "failure_reason": event.get("failure_reason", ""),
            "version": event.get("version"),
            "promotion_deadline": event.get("promotion_deadline"),
        }

    async def deployment_log(self, event: dict[str, Any]) -> None:
        await self.forward_line(event)

    async def deployment_status(self, event: dict[str, Any]) -> None:
        await self.forward_status(event)

    async def deployment_guard(self, event: dict[str, Any]) -> None:
        """The guard's reading during a bake (deployer.guard): forwarded as it comes."""
        await self.send_json({"type": "guard", "guard": event.get("guard") or {}})
