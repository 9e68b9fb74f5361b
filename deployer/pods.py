"""One pod model for the deployer and scaling: what either needs to know about a Pod."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from deployer.bounds import EVENT_MESSAGE_CHARS, cut_text

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# Waiting reasons every pod passes through on its way to running: "starting", not trouble.
STARTING_REASONS = frozenset({"ContainerCreating", "PodInitializing"})
# Waiting reasons that a real kubelet keeps retrying but that no wait will fix.
FATAL_WAITING = {
    "ErrImagePull": "the image could not be pulled",
    "ImagePullBackOff": "the image could not be pulled",
    "InvalidImageName": "the image name is invalid",
    "CrashLoopBackOff": "the container keeps crashing",
    "CreateContainerConfigError": "the container configuration is invalid",
    "CreateContainerError": "the container could not be created",
    "RunContainerError": "the container could not be started",
}


@dataclass(frozen=True)
class PodInfo:
    """A Pod as the deployer (versions, health) and scaling (drains, fit) read it."""

    name: str
    app: str = ""
    version: int | None = None
    ip: str = ""
    node: str = ""
    phase: str = ""
    ready: bool = False
    started: bool = False
    restarts: int = 0
    reason: str = ""
    message: str = ""
    deleting: bool = False  # deletionTimestamp is set
    created: str = ""  # creationTimestamp, ISO 8601 (sorts by time)
    namespace: str = ""
    uid: str = ""
    owner_kind: str = ""
    owner_name: str = ""
    mirror: bool = False
    grace_seconds: int = 30
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    # Effective requests (containers summed, at least the largest init container).
    requests: dict[str, Decimal] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def daemonset(self) -> bool:
        """True when a DaemonSet controls the pod (it would come straight back)."""
        return self.owner_kind == "DaemonSet"

    @property
    def managed(self) -> bool:
        """True when a controller will replace the pod after eviction."""
        return bool(self.owner_kind)

    @property
    def finished(self) -> bool:
        """True for pods whose containers have all exited for good."""
        return self.phase in ("Succeeded", "Failed")

    @property
    def fatal(self) -> str:
        """Why this pod cannot succeed, or "" while it still may."""
        if self.deleting:
            return ""  # a pod being deleted stops with an error code; that is expected
        if self.reason in FATAL_WAITING:
            return f"{FATAL_WAITING[self.reason]} ({self.reason}: {self.message})".replace(
                ": )", ")"
            )
        if self.phase == "Failed":
            return f"the pod failed ({self.reason or 'Failed'}: {self.message})"
        return ""

    @property
    def trouble(self) -> bool:
        """Something is wrong with the pod, beyond merely starting."""
        return self.phase == "Failed" or bool(self.reason and self.reason not in STARTING_REASONS)

    def describe(self) -> str:
        """A short state for the log: phase, readiness, waiting reason."""
        parts = [self.phase]
        if self.node:
            parts.append(f"on {self.node}")
        if self.ip:
            parts.append(f"ip {self.ip}")
        if self.reason:
            parts.append(self.reason)
        if self.ready:
            parts.append("ready")
        elif self.started:
            parts.append("started")
        if self.restarts:
            parts.append(f"{self.restarts} restarts")
        return ", ".join(parts)


def _requests(spec: Any) -> dict[str, Decimal]:
    """Effective requests of a pod spec, as the scheduler counts them."""
    if spec is None:
        return {}

    def of(container: Any) -> dict[str, Decimal]:
        resources = container.resources
        if resources is None:
            return {}
        merged = {**(resources.limits or {}), **(resources.requests or {})}
        return {k: parse_quantity(v) for k, v in merged.items()}

    total: dict[str, Decimal] = {}
    for container in spec.containers or []:
        for name, value in of(container).items():
            total[name] = total.get(name, Decimal(0)) + value
    for container in spec.init_containers or []:
        for name, value in of(container).items():
            total[name] = max(total.get(name, Decimal(0)), value)
    return total


def _waiting(status: Any) -> tuple[str, str]:
    """The reason and message a pod's status gives for not running (empty when running)."""
    statuses = status.container_statuses or []
    reason, message = status.reason or "", status.message or ""
    for item in statuses:
        state = item.state
        if state is not None and state.waiting is not None and state.waiting.reason:
            reason, message = state.waiting.reason, state.waiting.message or ""
        elif state is not None and state.terminated is not None and not reason:
            reason = state.terminated.reason or "Terminated"
            message = f"exit code {state.terminated.exit_code}"
    if not reason:
        for condition in status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False":
                reason, message = condition.reason or "Unschedulable", condition.message or ""
    return reason, message


def label_version(labels: dict[str, str]) -> int | None:
    """The version a pod's ``version`` label names; None when it names none."""
    try:
        return int(labels.get("version", ""))
    except ValueError:
        return None


def pod_info(pod: Any) -> PodInfo:
    """A PodInfo from a kubernetes-client V1Pod."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    labels = dict(meta.labels or {})
    annotations = dict(meta.annotations or {})
    version = label_version(labels)
    owner_kind = owner_name = ""
    for ref in meta.owner_references or []:
        if ref.controller:
            owner_kind, owner_name = ref.kind, ref.name
    grace = spec.termination_grace_period_seconds if spec else None
    statuses = (status.container_statuses if status else None) or []
    reason, message = _waiting(status) if status is not None else ("", "")
    return PodInfo(
        name=meta.name,
        app=labels.get("app", ""),
        version=version,
        ip=(status.pod_ip if status else None) or "",
        node=(spec.node_name if spec else None) or "",
        phase=(status.phase if status else None) or "Pending",
        ready=any(
            c.type == "Ready" and c.status == "True"
            for c in ((status.conditions if status else None) or [])
        ),
        started=bool(statuses) and all(s.state is not None and s.state.running for s in statuses),
        restarts=sum(int(s.restart_count or 0) for s in statuses),
        reason=reason,
        message=cut_text(message, EVENT_MESSAGE_CHARS),
        deleting=meta.deletion_timestamp is not None,
        created=meta.creation_timestamp.isoformat() if meta.creation_timestamp else "",
        namespace=meta.namespace or "default",
        uid=meta.uid or "",
        owner_kind=owner_kind,
        owner_name=owner_name,
        mirror=MIRROR_ANNOTATION in annotations,
        grace_seconds=30 if grace is None else int(grace),
        labels=labels,
        annotations=annotations,
        requests=_requests(spec),
    )


@dataclass(frozen=True)
class PodStartWait:
    """Waiting for a version's pods to start: which pods, how many, how long, and who hears.

    ``on_change`` gets each pod whenever its state changes, ``on_event(type, text)`` the
    Kubernetes Events of those pods as they come; ``cancelled`` ends the wait early.
    """

    namespace: str
    app: str
    version: int
    replicas: int
    timeout: float
    on_change: Callable[[PodInfo], None]
    cancelled: Callable[[], bool]
    on_event: Callable[[str, str], None] | None = None
