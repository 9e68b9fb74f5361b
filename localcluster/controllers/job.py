"""Job controller (batch/v1): runs a Job's pods to completion, as pkg/controller/job does.

NonIndexed Jobs: up to ``parallelism`` pods at a time until ``completions`` of them have
succeeded. A failed pod is replaced after an exponential backoff (10 s, 20 s, ... capped at
6 min) until the failures (failed pods, plus container restarts with restartPolicy
OnFailure) exceed ``backoffLimit``; a Job active for longer than ``activeDeadlineSeconds``
has its pods deleted. The end is written as kube-controller-manager writes it: first the
interim condition (SuccessCriteriaMet, FailureTarget), then, once no pod of the Job is
left running, the terminal one (Complete with completionTime, or Failed), each with
status "True", a reason (CompletionsReached, BackoffLimitExceeded, DeadlineExceeded), a
message, lastProbeTime and lastTransitionTime.

Pods are counted once each, when they finish (or when a running one is deleted): counts
only ever grow, even when finished pods are deleted later.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from typing import Any

from ..errors import NotFound, StatusError
from ..records import now_rfc3339
from ..store import Event
from .base import Controller, Key, controller_of
from .replicaset import _parse, owner_ref, pod_active, pod_ready

COMPONENT = "job-controller"
# DefaultJobPodFailureBackOff and MaxJobPodFailureBackOff (pkg/controller/job).
POD_FAILURE_BACKOFF_SECONDS = 10.0
MAX_POD_FAILURE_BACKOFF_SECONDS = 360.0

COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")


def condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The Job's condition of type ``kind`` with status True, if any."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def finished(job: dict[str, Any]) -> bool:
    """Whether the Job has its terminal condition (Complete or Failed)."""
    return condition(job, "Complete") is not None or condition(job, "Failed") is not None


def _new_condition(kind: str, reason: tuple[str, str], now: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason[0],
        "message": reason[1],
    }


def _phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or ""


def _finished_at(pod: dict[str, Any]) -> dt.datetime | None:
    """When the pod's last container terminated (for the failure backoff)."""
    latest = None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        stamp = ((status.get("state") or {}).get("terminated") or {}).get("finishedAt")
        if stamp:
            try:
                when = _parse(stamp)
            except ValueError:
                continue
            latest = when if latest is None or when > latest else latest
    return latest


def _restarts(pod: dict[str, Any]) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(c.get("restartCount") or 0) for c in statuses)


class JobController(Controller):
    """Creates a Job's pods, counts how they end, and writes the Job's status and conditions."""

    name = "job-controller"
    component = COMPONENT
    owns = "jobs.batch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per Job uid: pod uids already counted, and active pod uids seen at the last look
        # (an active pod that vanished was deleted while it ran: a failure).
        self._counted: dict[str, set[str]] = {}
        self._active: dict[str, set[str]] = {}
        self._last_failure: dict[str, dt.datetime] = {}

    def related_keys(self, event: Event) -> Iterable[Key]:
        """The Job that controls a changed pod."""
        if event.resource != "pods":
            return []
        ref = controller_of(event.obj)
        if ref is None or ref.get("kind") != "Job":
            return []
        return [(event.obj["metadata"]["namespace"], ref["name"])]

    async def reconcile(self, key: Key) -> None:
        """Count finished pods, start or stop pods, decide the end, write status."""
        job = self.store.peek("jobs.batch", key[0], key[1])
        if job is None:
            return
        uid = job["metadata"]["uid"]
        spec = job.get("spec") or {}
        status = copy.deepcopy(job.get("status") or {})
        now = dt.datetime.now(dt.UTC)
        stamp = now_rfc3339()
        pods = [
            e.obj
            for e in self.store.controlled_by("pods", uid)
            if e.obj["metadata"].get("namespace") == key[0]
        ]
        counted = self._counted.setdefault(uid, set())
        succeeded = int(status.get("succeeded") or 0)
        failed = int(status.get("failed") or 0)
        present = {p["metadata"]["uid"] for p in pods}
        for gone in self._active.get(uid, set()) - present - counted:
            counted.add(gone)
            failed += 1
        for pod in pods:
            pod_uid = pod["metadata"]["uid"]
            if pod_uid in counted or _phase(pod) not in ("Succeeded", "Failed"):
                continue
            counted.add(pod_uid)
            if _phase(pod) == "Succeeded":
                succeeded += 1
            else:
                failed += 1
                self._last_failure[uid] = _finished_at(pod) or now
        # A restart from a previous life: counts in status already cover the finished pods.
        succeeded = max(succeeded, sum(1 for p in pods if _phase(p) == "Succeeded"))
        failed = max(failed, sum(1 for p in pods if _phase(p) == "Failed"))
        active = [p for p in pods if pod_active(p)]
        conditions = list(status.get("conditions") or [])
        if not status.get("startTime") and not spec.get("suspend"):
            status["startTime"] = stamp
        done = finished(job) or job["metadata"].get("deletionTimestamp")

        if not done and not any(
            c.get("type") in ("SuccessCriteriaMet", "FailureTarget") for c in conditions
        ):
            completions = int(spec.get("completions") or 1)
            backoff_limit = int(spec.get("backoffLimit", 6))
            restarts = (
                sum(_restarts(p) for p in active)
                if (spec.get("template") or {}).get("spec", {}).get("restartPolicy") == "OnFailure"
                else 0
            )
            deadline = spec.get("activeDeadlineSeconds")
            elapsed = (now - _parse(status["startTime"])).total_seconds()
            if succeeded >= completions:
                conditions.append(_new_condition("SuccessCriteriaMet", COMPLETIONS_REACHED, stamp))
            elif failed + restarts > backoff_limit:
                conditions.append(_new_condition("FailureTarget", BACKOFF_LIMIT_EXCEEDED, stamp))
                self.recorder.record(
                    job, "Warning", BACKOFF_LIMIT_EXCEEDED[0], BACKOFF_LIMIT_EXCEEDED[1], COMPONENT
                )
            elif deadline is not None and elapsed >= int(deadline):
                conditions.append(_new_condition("FailureTarget", DEADLINE_EXCEEDED, stamp))
                self.recorder.record(
                    job, "Warning", DEADLINE_EXCEEDED[0], DEADLINE_EXCEEDED[1], COMPONENT
                )
            else:
                if deadline is not None:
                    self.requeue(key, int(deadline) - elapsed + 0.05)
                if not spec.get("suspend"):
                    parallelism = int(spec.get("parallelism", 1))
                    wanted = min(parallelism, completions - succeeded) - len(active)
                    if wanted > 0:
                        wait = self._backoff_left(uid, failed, now)
                        if wait > 0:
                            self.requeue(key, wait)
                        else:
                            active += await self._create(job, wanted)
        if any(c.get("type") in ("SuccessCriteriaMet", "FailureTarget") for c in conditions):
            # The Job's end is decided: no pod of it may go on running.
            for pod in active:
                if pod["metadata"]["uid"] not in counted:
                    counted.add(pod["metadata"]["uid"])
                    failed += 1
            await self._delete(job, active)
            active = []
        terminating = [
            p
            for p in pods
            if p["metadata"].get("deletionTimestamp") and _phase(p) not in ("Succeeded", "Failed")
        ]
        if not finished(job) and not terminating and not active:
            for interim, terminal in (
                ("SuccessCriteriaMet", "Complete"),
                ("FailureTarget", "Failed"),
            ):
                cond = next((c for c in conditions if c.get("type") == interim), None)
                if cond is not None:
                    conditions.append(
                        _new_condition(terminal, (cond["reason"], cond["message"]), stamp)
                    )
                    if terminal == "Complete":
                        status["completionTime"] = stamp
                        self.recorder.record(job, "Normal", "Completed", "Job completed", COMPONENT)
        self._active[uid] = {p["metadata"]["uid"] for p in active}
        status.update(
            {
                "active": len(active),
                "succeeded": succeeded,
                "failed": failed,
                "ready": sum(1 for p in active if pod_ready(p)),
                "terminating": len(terminating),
                "uncountedTerminatedPods": {},
            }
        )
        # active, succeeded and failed are omitted at zero (omitempty); ready and
        # terminating are pointers, written as 0.
        for field in ("active", "succeeded", "failed"):
            if not status[field]:
                del status[field]
        if conditions:
            status["conditions"] = conditions
        if job.get("status") == status:
            return

        def apply(current: dict[str, Any]) -> None:
            current["status"] = status

        await self.store.mutate(
            "jobs.batch", key[0], key[1], apply, subresource="status", copy_result=False
        )

    def _backoff_left(self, uid: str, failed: int, now: dt.datetime) -> float:
        """Seconds before a failed pod may be replaced (getRemainingTimePerIndex)."""
        last = self._last_failure.get(uid)
        if not failed or last is None:
            return 0.0
        delay = min(
            POD_FAILURE_BACKOFF_SECONDS * 2 ** (failed - 1), MAX_POD_FAILURE_BACKOFF_SECONDS
        )
        return delay - (now - last).total_seconds()

    async def _create(self, job: dict[str, Any], count: int) -> list[dict[str, Any]]:
        template = (job.get("spec") or {}).get("template") or {}
        name = job["metadata"]["name"]
        namespace = job["metadata"]["namespace"]
        created_pods = []
        for _ in range(count):
            pod = {
                "metadata": copy.deepcopy(template.get("metadata") or {}),
                "spec": copy.deepcopy(template.get("spec") or {}),
            }
            meta = pod["metadata"]
            meta.pop("name", None)
            meta["generateName"] = f"{name}-"
            meta["namespace"] = namespace
            meta["ownerReferences"] = [owner_ref(job)]
            try:
                created = await self.store.create("pods", namespace, pod)
            except StatusError as exc:
                self.recorder.record(
                    job, "Warning", "FailedCreate", f"Error creating: {exc}", COMPONENT
                )
                break
            created_pods.append(created)
            self.recorder.record(
                job,
                "Normal",
                "SuccessfulCreate",
                f"Created pod: {created['metadata']['name']}",
                COMPONENT,
            )
        return created_pods

    async def _delete(self, job: dict[str, Any], victims: list[dict[str, Any]]) -> None:
        for pod in victims:
            meta = pod["metadata"]
            try:
                await self.store.delete(
                    "pods", meta["namespace"], meta["name"], preconditions={"uid": meta["uid"]}
                )
            except NotFound:
                continue
            self.recorder.record(
                job, "Normal", "SuccessfulDelete", f"Deleted pod: {meta['name']}", COMPONENT
            )
