"""Manual promotion: a deploy whose pods passed their health checks waits for a human.

An app whose ``promotion`` is ``manual`` deploys as usual up to the health checks; then
its run moves the deployment to AWAITING_PROMOTION and waits, keeping its heartbeat
(deployer.heartbeat beats for every status in ``Deployment.IN_PROGRESS``), while the old
version keeps every request. Promote and Reject (deployer.services.request_promotion,
from the dashboard or the REST API) move the row back to RUNNING with the decision; the
run, which reads its row every :data:`POLL_SECONDS`, goes on to the switch after a
Promote, and rolls back after a Reject exactly as after a failed health check (nothing
was routed to the new version). The app's ``promotion_timeout_seconds`` after the wait
began, the run rejects the deployment itself. An abort still works while it waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from deployer import events
from deployer.collaborators import StopDeployment
from deployer.models import App, Deployment, IllegalTransition
from deployer.workflow import TakenOver, Workflow

# How often a waiting run reads its row for a decision, an abort or a new owner.
POLL_SECONDS = 0.5
STEP = "promotion"


def is_manual(descriptor: dict[str, Any]) -> bool:
    """Whether a deploy of this descriptor waits for Promote or Reject after its health checks."""
    return (descriptor.get("promotion") or {}).get("mode") == App.Promotion.MANUAL


def timeout_of(descriptor: dict[str, Any]) -> float:
    """Seconds a deploy of this descriptor waits before it is rejected."""
    value = (descriptor.get("promotion") or {}).get("timeout")
    return float(value) if isinstance(value, int | float) and value > 0 else 3600.0


def span(seconds: float) -> str:
    """A wait as a person says it: 45 s, 10 min, 2 h 30 min, 3 d."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@dataclass(frozen=True)
class Reading:
    """What a waiting run reads from its row at each poll."""

    status: str
    worker: str
    abort_requested: bool
    decision: str
    decided_by: str


def read(deployment_id: int) -> Reading | None:
    """The row's promotion state in one query; None when the row is gone."""
    row = (
        Deployment.objects.filter(pk=deployment_id)
        .values_list(
            "status",
            "worker",
            "abort_requested",
            "promotion_decision",
            "promotion_decided_by__username",
        )
        .first()
    )
    if row is None:
        return None
    status, worker, aborted, decision, who = row
    return Reading(status, worker, bool(aborted), decision or "", who or "")


def run(workflow: Workflow) -> None:
    """The ``promotion`` step of a manual deploy; nothing for an automatic one.

    Returns once promoted; raises StopDeployment when rejected, timed out or aborted,
    and TakenOver when another worker took the run.
    """
    if not is_manual(workflow.descriptor):
        return
    with workflow.step(STEP):
        wait(workflow)


def wait(workflow: Workflow) -> None:
    """Move to AWAITING_PROMOTION, then poll the row until a decision, an abort or the timeout."""
    timeout = timeout_of(workflow.descriptor)
    start(workflow, timeout)
    deadline = workflow.clock.monotonic() + timeout
    while True:
        reading = read(workflow.deployment.pk)
        if reading is None:
            raise StopDeployment("the deployment was deleted while it awaited promotion")
        if reading.worker != workflow.deployment.worker:
            raise TakenOver(reading.worker)
        if reading.abort_requested:
            leave(workflow)
            raise StopDeployment("aborted by user", aborted=True)
        if reading.status == Deployment.Status.RUNNING and reading.decision:
            decided(workflow, reading)
            if reading.decision == Deployment.Decision.PROMOTE:
                return
            raise StopDeployment(f"rejected by {reading.decided_by or 'a user'}")
        remaining = deadline - workflow.clock.monotonic()
        if remaining <= 0 and time_out(workflow):
            raise StopDeployment(
                f"not promoted within {span(timeout)}: rejected when the promotion timed out"
            )
        workflow.clock.sleep(min(POLL_SECONDS, max(remaining, 0.0)) or POLL_SECONDS)


def start(workflow: Workflow, timeout: float) -> None:
    """RUNNING -> AWAITING_PROMOTION, with the line that says how long it waits; emit the event."""
    deployment = workflow.deployment
    deadline = timezone.now() + timedelta(seconds=timeout)
    live = (
        f"v{workflow.previous_version} keeps serving"
        if workflow.previous_version
        else f"{workflow.hostname} serves nothing until then"
    )
    message = (
        f"v{deployment.version} of {workflow.name} passed its health checks and awaits "
        f"promotion; {live}. Promote or Reject it within {span(timeout)} "
        f"(rejected at {deadline:%Y-%m-%d %H:%M:%S} UTC otherwise)."
    )
    with transaction.atomic():
        workflow.flush()
        deployment.await_promotion()
        workflow.log(message, step=STEP)
        workflow.sink.status()
    events.emit(
        "awaiting_promotion",
        message,
        deployment=deployment,
        details={
            "version": deployment.version,
            "previous_version": workflow.previous_version,
            "timeout_seconds": timeout,
            "deadline": deadline.isoformat(),
        },
    )


def decided(workflow: Workflow, reading: Reading) -> None:
    """Take in the decision Promote or Reject stored with the row back in RUNNING."""
    deployment = workflow.deployment
    deployment.status = Deployment.Status.RUNNING
    deployment.promotion_decision = reading.decision
    verb = "Promoted" if reading.decision == Deployment.Decision.PROMOTE else "Rejected"
    workflow.log(f"{verb} by {reading.decided_by or 'a user'}.", step=STEP)


def time_out(workflow: Workflow) -> bool:
    """Reject the deployment as its time ran out; False when a user decided just before."""
    try:
        Deployment.objects.get(pk=workflow.deployment.pk).stop_awaiting(Deployment.Decision.REJECT)
    except IllegalTransition:
        return False  # decided or aborted meanwhile: the next poll reads which
    deployment = workflow.deployment
    deployment.status = Deployment.Status.RUNNING
    deployment.promotion_decision = Deployment.Decision.REJECT
    workflow.log("Nobody promoted or rejected it in time: rejected.", level="warning", step=STEP)
    workflow.sink.status()
    return True


def leave(workflow: Workflow) -> None:
    """Back to RUNNING for the rollback of an abort (so no Promote is offered meanwhile)."""
    try:
        Deployment.objects.get(pk=workflow.deployment.pk).stop_awaiting()
    except IllegalTransition:
        return  # a decision moved it already
    workflow.deployment.status = Deployment.Status.RUNNING
    workflow.sink.status()
