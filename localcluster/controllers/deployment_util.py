"""Deployment arithmetic and conditions (pkg/controller/deployment/util/deployment_util.go)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from typing import Any

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Annotations a Deployment does not pass on to its ReplicaSets (skipCopyAnnotation).
SKIP_COPY = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    """The current time in the API's second precision."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(stamp: str) -> dt.datetime:
    """Parse an API timestamp."""
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def template_hash(template: dict[str, Any], collision_count: int | None) -> str:
    """FNV-32a of the template (plus the collision count), safe-encoded like controller.ComputeHash."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += str(collision_count).encode()
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHABET[int(ch) % len(_SAFE_ALPHABET)] for ch in str(value))


def _prune(value: Any) -> Any:
    # Go compares structs, where a null field and an absent one are the same zero value
    # (kubectl rollout undo sends "creationTimestamp": null, for one).
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """A pruned copy of a pod template without the pod-template-hash label (EqualIgnoreHash)."""
    template = _prune(copy.deepcopy(template or {}))
    labels = (template.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return template


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value.endswith("%"):
        fraction = int(value[:-1]) * total / 100
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(value)


def surge_and_unavailable(deployment: dict[str, Any]) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas (ResolveFenceposts)."""
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def revision_of(rs: dict[str, Any]) -> int:
    """A ReplicaSet's revision annotation as a number (0 when missing)."""
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def spec_replicas(rs: dict[str, Any]) -> int:
    """spec.replicas."""
    return int(rs["spec"].get("replicas", 0))


def status_count(rs: dict[str, Any], field: str) -> int:
    """A status counter, 0 when omitted."""
    return int((rs.get("status") or {}).get(field) or 0)


def set_condition(status: dict[str, Any], condition: dict[str, Any]) -> None:
    """SetDeploymentCondition: no change for the same status and reason; moved to the end otherwise."""
    conditions = status.get("conditions") or []
    current = next((c for c in conditions if c["type"] == condition["type"]), None)
    if (
        current is not None
        and current["status"] == condition["status"]
        and current.get("reason") == condition.get("reason")
    ):
        return
    if current is not None and current["status"] == condition["status"]:
        condition["lastTransitionTime"] = current["lastTransitionTime"]
    status["conditions"] = [c for c in conditions if c["type"] != condition["type"]] + [condition]


def condition(ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
    """A deployment condition stamped now."""
    stamp = now()
    return {
        "type": ctype,
        "status": status,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def get_condition(status: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    """The condition of type ``ctype``, if present."""
    return next((c for c in status.get("conditions") or [] if c["type"] == ctype), None)
