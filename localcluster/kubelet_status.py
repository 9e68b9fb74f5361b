"""Pod status as the kubelet reports it: phase, conditions, container statuses."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from .images import ImageRef


def now() -> str:
    """The current time in the API's RFC 3339 second precision."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_id(pod_uid: str, name: str, attempt: int) -> str:
    """A containerd-style ID, stable for one run of one container."""
    return "containerd://" + hashlib.sha256(f"{pod_uid}/{name}/{attempt}".encode()).hexdigest()


@dataclass
class ContainerState:
    """What the kubelet knows about one container; rendered into a containerStatuses item."""

    name: str
    image: str
    init: bool = False
    ref: ImageRef | None = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    container_id: str | None = None

    @property
    def running(self) -> bool:
        """Whether the container's process is running."""
        return "running" in self.state

    @property
    def terminated(self) -> dict[str, Any] | None:
        """The terminated state, if the container is stopped."""
        return self.state.get("terminated")

    def render(self) -> dict[str, Any]:
        """The containerStatuses item."""
        ref = self.ref or ImageRef.parse(self.image)
        status: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": ref.canonical if self.container_id else self.image,
            "imageID": ref.image_id if self.container_id else "",
            "started": self.started,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def qos_class(pod: dict[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, from the containers' requests and limits."""
    containers = (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        resources = c.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            limit = limits.get(name)
            request = requests.get(name, limit)
            if limit is None or str(request) != str(limit):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def phase(pod: dict[str, Any], init_done: bool, containers: list[ContainerState]) -> str:
    """The pod phase, following getPhase in pkg/kubelet/kubelet_pods.go."""
    if not init_done:
        # Init containers that failed with restartPolicy Never fail the pod.
        if pod["spec"].get("restartPolicy") == "Never" and any(
            (c.terminated or {}).get("exitCode", 0) != 0 for c in containers if c.init
        ):
            return "Failed"
        return "Pending"
    regular = [c for c in containers if not c.init]
    running = waiting = stopped = succeeded = 0
    for c in regular:
        if c.running:
            running += 1
        elif c.terminated is not None:
            stopped += 1
            if c.terminated.get("exitCode") == 0:
                succeeded += 1
        elif c.last_state.get("terminated"):
            stopped += 1
        else:
            waiting += 1
    policy = pod["spec"].get("restartPolicy", "Always")
    if waiting > 0:
        return "Pending"
    if running > 0:
        return "Running"
    if stopped == len(regular):
        if policy == "Always":
            return "Running"
        if succeeded == len(regular):
            return "Succeeded"
        if policy == "OnFailure":
            return "Running"
        return "Failed"
    return "Pending"


def _condition(
    previous: dict[str, dict[str, Any]], ctype: str, ok: bool, reason: str = "", message: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = previous.get(ctype)
    changed = old is None or old.get("status") != status
    cond: dict[str, Any] = {
        "type": ctype,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": now() if changed else old["lastTransitionTime"],  # type: ignore[index]
    }
    if not ok and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


def pod_conditions(
    pod: dict[str, Any],
    sandbox_ready: bool,
    init_done: bool,
    pod_phase: str,
    containers: list[ContainerState],
) -> list[dict[str, Any]]:
    """Conditions in the order a 1.32 kubelet writes them, keeping the scheduler's PodScheduled."""
    old_conditions = (pod.get("status") or {}).get("conditions") or []
    previous = {c["type"]: c for c in old_conditions}
    regular = [c for c in containers if not c.init]
    unready = [c.name for c in regular if not c.ready]
    completed = pod_phase in ("Succeeded", "Failed")
    pending_init = [
        c.name for c in containers if c.init and (c.terminated or {}).get("exitCode") != 0
    ]
    conditions = [_condition(previous, "PodReadyToStartContainers", sandbox_ready)]
    conditions.append(
        _condition(
            previous,
            "Initialized",
            init_done,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending_init)}]",
        )
    )
    if completed:
        reason, message = "PodCompleted", ""
    else:
        reason = "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(unready)}]"
    all_ready = not unready and not completed
    containers_ready = _condition(previous, "ContainersReady", all_ready, reason, message)
    gate_reason, gate_messages = _readiness_gates(pod, previous)
    if all_ready and gate_messages:
        ready = _condition(previous, "Ready", False, gate_reason, ", ".join(gate_messages))
    else:
        ready = _condition(previous, "Ready", all_ready, reason, message)
    conditions += [ready, containers_ready]
    for cond in old_conditions:
        if cond["type"] not in {c["type"] for c in conditions}:
            conditions.append(cond)
    return conditions


def _readiness_gates(
    pod: dict[str, Any], conditions: dict[str, dict[str, Any]]
) -> tuple[str, list[str]]:
    # pkg/kubelet/status/generate.go: every spec.readinessGates condition must be True.
    messages = []
    for gate in pod["spec"].get("readinessGates") or []:
        ctype = gate.get("conditionType", "")
        cond = conditions.get(ctype)
        if cond is None:
            messages.append(
                f'corresponding condition of pod readiness gate "{ctype}" does not exist.'
            )
        elif cond.get("status") != "True":
            messages.append(
                f'the status of pod readiness gate "{ctype}" is not "True", but {cond.get("status")}'
            )
    return "ReadinessGatesNotReady", messages
