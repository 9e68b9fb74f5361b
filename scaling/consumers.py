"""The live log socket of a scaling run: the same protocol as the deployment log socket."""

from __future__ import annotations

from typing import Any

from deployer.livelog import LiveLogConsumer
from scaling.logsink import group_name, status_payload
from scaling.models import ScalingRun, ScalingRunLog
from scaling.permissions import can_view_runs


class ScalingRunLogConsumer(LiveLogConsumer[ScalingRun]):
    """``/ws/scaling/runs/<id>/?after=<seq>``: stored lines after seq, then new lines and status."""

    terminal = ScalingRun.TERMINAL

    def load(self, pk: int) -> ScalingRun | None:
        return ScalingRun.objects.filter(pk=pk).first()

    def may_view(self, user: Any, obj: ScalingRun) -> bool:
        """Users allowed to see scaling runs."""
        return can_view_runs(user)

    def group_for(self, obj: ScalingRun) -> str:
        return group_name(obj.pk)

    def stored_lines(self, obj: ScalingRun, after: int, limit: int) -> list[dict[str, Any]]:
        lines = ScalingRunLog.objects.filter(run_id=obj.pk, seq__gt=after).order_by("seq")
        return [line.as_payload() for line in lines[:limit]]

    def current_status(self, obj: ScalingRun) -> dict[str, Any]:
        """The run's status as published after each change."""
        obj.refresh_from_db()
        return dict(status_payload(obj))

    def client_status(self, event: dict[str, Any]) -> dict[str, Any]:
        """Status, failure reason and result."""
        return {
            "type": "status",
            "status": event["status"],
            "failure_reason": event.get("failure_reason", ""),
            "result": event.get("result", []),
        }

    async def scaling_log(self, event: dict[str, Any]) -> None:
        await self.forward_line(event)

    async def scaling_status(self, event: dict[str, Any]) -> None:
        await self.forward_status(event)
