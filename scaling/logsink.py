"""Scaling run logs: the deployer's live log (deployer.logsink) over ScalingRunLog.

Browsers fetch stored lines first, then follow the group ``scaling-run-<id>``.
"""

from __future__ import annotations

from typing import Any, TypedDict

from deployer.logsink import Level, LogStream, OwnerLog
from scaling.models import ScalingRun, ScalingRunLog


class RunStatus(TypedDict):
    """The fields of ``scaling.status``, sent whenever a run's status changes."""

    run: int
    status: str
    failure_reason: str
    result: list[Any]


def _run_status(run: ScalingRun) -> dict[str, Any]:
    fields: RunStatus = {
        "run": run.pk,
        "status": run.status,
        "failure_reason": run.failure_reason,
        "result": list(run.result),
    }
    return dict(fields)


RUNS: LogStream[ScalingRun] = LogStream(
    kind="scaling",
    group_prefix="scaling-run",
    line_model=ScalingRunLog,
    status_fields=_run_status,
)
append = RUNS.append
group_name = RUNS.group_name
status_payload = RUNS.status_payload
status_changed = RUNS.status_changed

RunLog = OwnerLog[ScalingRun]


def run_log(run: ScalingRun) -> RunLog:
    """A run's log: each line stored, published and copied to the worker's own log."""
    return OwnerLog(RUNS, run)


class RunTakenOver(Exception):
    """Another worker resumed the run: this one stops where it is and undoes nothing."""


class ClaimedRunLog(OwnerLog[ScalingRun]):
    """A running run's log, written only while the row still holds the run's claim.

    Every change a run makes is logged, so a worker that lost its run (resumed elsewhere
    after its heartbeat stopped) raises RunTakenOver at its next line instead of acting
    beside the worker that resumed it.
    """

    def log(self, message: str, *, level: Level = "info", step: str = "") -> None:
        """Store and publish one line; RunTakenOver once another worker holds the run."""
        if not self.owner.still_claimed():
            raise RunTakenOver(f"scaling run #{self.owner.pk} was resumed by another worker")
        super().log(message, level=level, step=step)


def claimed_log(run: ScalingRun) -> ClaimedRunLog:
    """The log of a run this worker just started (see ClaimedRunLog)."""
    return ClaimedRunLog(RUNS, run)
