"""The scheduler: binds pending pods to Ready nodes with room, honouring cordon, taints, selectors."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .controllers.base import Controller, Key, obj_key
from .kubelet_status import now
from .store import Event

COMPONENT = "default-scheduler"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
# Unschedulable pods are retried on every node or pod change, and at least this often.
RETRY_SECONDS = 5.0
# Pods whose parsed requests are kept; past it the cache starts over.
REQUEST_CACHE_SIZE = 10000

_UNITS = {
    "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:[eE]([+-]?[0-9]+))?([a-zA-Z]*)$")


def quantity(value: Any) -> float:
    """Parse a resource quantity ("100m", "64Mi", "1.5", 2) into a float; 0 when malformed."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return 0.0
    number = float(match.group(1))
    if match.group(2):
        number *= 10 ** int(match.group(2))
    return number * _UNITS.get(match.group(3), 1.0)


def pod_requests(pod: dict[str, Any]) -> dict[str, float]:
    """Effective requests: sum over containers, at least the largest init container, plus overhead."""

    def of(container: dict[str, Any]) -> dict[str, float]:
        resources = container.get("resources") or {}
        merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return {name: quantity(v) for name, v in merged.items()}

    spec = pod["spec"]
    total: Counter[str] = Counter()
    for c in spec.get("containers") or []:
        total.update(of(c))
    for c in spec.get("initContainers") or []:
        for name, value in of(c).items():
            total[name] = max(total[name], value)
    for name, value in (spec.get("overhead") or {}).items():
        total[name] += quantity(value)
    return dict(total)


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """Whether any toleration matches the taint (pkg/apis/core/v1/helper.TolerationsTolerateTaint)."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("key") and t["key"] != taint.get("key"):
            continue
        if not t.get("key") and t.get("operator") != "Exists":
            continue
        if t.get("operator", "Equal") == "Exists" or t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _matches_expression(labels: dict[str, str], expr: dict[str, Any]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            left, right = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return left > right if op == "Gt" else left < right
    return False


def node_selected(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    """nodeSelector and required node affinity."""
    labels = node["metadata"].get("labels") or {}
    for key, value in (pod["spec"].get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    affinity = ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if affinity:
        terms = affinity.get("nodeSelectorTerms") or []
        if not any(
            all(_matches_expression(labels, e) for e in term.get("matchExpressions") or [])
            and all(
                _matches_expression({"metadata.name": node["metadata"]["name"]}, e)
                for e in term.get("matchFields") or []
            )
            for term in terms
        ):
            return False
    return True


def node_ready(node: dict[str, Any]) -> bool:
    """Whether the node's Ready condition is True."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def node_taints(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The node's taints, including the ones implied by cordon and NotReady."""
    taints = list((node.get("spec") or {}).get("taints") or [])
    keys = {t.get("key") for t in taints}
    if (node.get("spec") or {}).get("unschedulable") and UNSCHEDULABLE_TAINT not in keys:
        taints.append({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"})
    if not node_ready(node) and NOT_READY_TAINT not in keys:
        taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
    return taints


def pod_active(pod: dict[str, Any]) -> bool:
    """Whether a bound pod still holds node resources (not Succeeded or Failed)."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


class Scheduler(Controller):
    """Binds each pending pod to the least allocated feasible node, or explains why none fits."""

    name = "scheduler"
    component = COMPONENT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unschedulable: set[Key] = set()
        self._request_cache: dict[str, dict[str, float]] = {}

    @staticmethod
    def _wants(pod: dict[str, Any]) -> bool:
        spec = pod.get("spec") or {}
        return (
            not spec.get("nodeName")
            and not pod["metadata"].get("deletionTimestamp")
            and spec.get("schedulerName", COMPONENT) == COMPONENT
            and pod_active(pod)
        )

    def _requests(self, pod: dict[str, Any]) -> dict[str, float]:
        # A pod's requests are fixed once it exists: parse them once per pod.
        uid = pod["metadata"]["uid"]
        found = self._request_cache.get(uid)
        if found is None:
            if len(self._request_cache) >= REQUEST_CACHE_SIZE:
                self._request_cache.clear()
            found = self._request_cache[uid] = pod_requests(pod)
        return found

    def initial_keys(self) -> Iterable[Key]:
        """Every pending pod."""
        return [obj_key(e.obj) for e in self.store.select("pods") if self._wants(e.obj)]

    def keys_for(self, event: Event) -> Iterable[Key]:
        """Pending pods; on node or capacity changes, the pods that did not fit before."""
        if event.resource == "pods":
            if event.type != "DELETED" and self._wants(event.obj):
                return [obj_key(event.obj)]
            # A bound pod going or finishing frees room.
            was_bound = event.old is not None and (event.old.get("spec") or {}).get("nodeName")
            if was_bound and (event.type == "DELETED" or not pod_active(event.obj)):
                return list(self._unschedulable)
            return []
        if event.resource == "nodes":
            return list(self._unschedulable)
        return []

    async def reconcile(self, key: Key) -> None:
        """Bind one pod, or mark it Unschedulable with the reasons."""
        pod = self.store.peek("pods", key[0], key[1])
        if pod is None or not self._wants(pod):
            self._unschedulable.discard(key)
            return
        nodes = [e.obj for e in self.store.select("nodes")]
        usage: dict[str, Counter[str]] = {n["metadata"]["name"]: Counter() for n in nodes}
        for node_name, used in usage.items():
            bound = self.store.select(
                "pods", None, None, f"spec.nodeName={node_name}", ordered=False
            )
            for entry in bound:
                if pod_active(entry.obj):
                    used.update(self._requests(entry.obj))
                    used["pods"] += 1
        wanted = pod_requests(pod)
        tolerations = pod["spec"].get("tolerations") or []
        reasons: Counter[str] = Counter()
        feasible: list[tuple[float, str]] = []
        for node in nodes:
            name = node["metadata"]["name"]
            reason = self._misfit(pod, node, wanted, tolerations, usage[name])
            if reason:
                reasons[reason] += 1
                continue
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            score = 0.0
            for resource in ("cpu", "memory"):
                capacity = quantity(allocatable.get(resource, 0)) or 1.0
                score += (usage[name][resource] + wanted.get(resource, 0.0)) / capacity
            score += usage[name]["pods"] / (quantity(allocatable.get("pods", 110)) or 1.0)
            feasible.append((score, name))
        if not feasible:
            await self._unschedulable_pod(key, pod, len(nodes), reasons)
            return
        self._unschedulable.discard(key)
        _, chosen = min(feasible)
        await self._bind(pod, chosen)

    def _misfit(
        self,
        pod: dict[str, Any],
        node: dict[str, Any],
        wanted: dict[str, float],
        tolerations: list[dict[str, Any]],
        used: Counter[str],
    ) -> str | None:
        if node["metadata"].get("deletionTimestamp"):
            return "node(s) were being deleted"
        for taint in node_taints(node):
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(
                tolerations, taint
            ):
                return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
        if not node_selected(pod, node):
            return "node(s) didn't match Pod's node affinity/selector"
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        if used["pods"] + 1 > quantity(allocatable.get("pods", 110)):
            return "Too many pods"
        for resource, amount in wanted.items():
            if amount <= 0:
                continue
            if resource not in allocatable:
                return f"Insufficient {resource}"
            if used[resource] + amount > quantity(allocatable[resource]) + 1e-9:
                return f"Insufficient {resource}"
        return None

    async def _unschedulable_pod(
        self, key: Key, pod: dict[str, Any], total: int, reasons: Counter[str]
    ) -> None:
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        if total == 0:
            message = "no nodes available to schedule pods"
        else:
            message = (
                f"0/{total} nodes are available: {detail}. preemption: 0/{total} nodes are available: "
                f"{total} Preemption is not helpful for scheduling."
            )
        self._unschedulable.add(key)
        self.requeue(key, RETRY_SECONDS)
        previous = _scheduled_condition(pod)
        if previous is not None and previous.get("message") == message:
            return

        def mark(current: dict[str, Any]) -> None:
            _set_scheduled_condition(current, "False", reason="Unschedulable", message=message)
            current["status"].setdefault("phase", "Pending")

        updated = await self.store.mutate("pods", key[0], key[1], mark, subresource="status")
        self.recorder.record(updated, "Warning", "FailedScheduling", message, COMPONENT)

    async def _bind(self, pod: dict[str, Any], node: str) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        uid = pod["metadata"]["uid"]

        def bind(current: dict[str, Any]) -> None:
            if current["metadata"]["uid"] != uid or current["spec"].get("nodeName"):
                return
            current["spec"]["nodeName"] = node

        bound = await self.store.mutate("pods", namespace, name, bind)
        if bound["spec"].get("nodeName") != node or bound["metadata"]["uid"] != uid:
            return

        def scheduled(current: dict[str, Any]) -> None:
            _set_scheduled_condition(current, "True")

        bound = await self.store.mutate("pods", namespace, name, scheduled, subresource="status")
        self.recorder.record(
            bound,
            "Normal",
            "Scheduled",
            f"Successfully assigned {namespace}/{name} to {node}",
            COMPONENT,
        )


def _set_scheduled_condition(pod: dict[str, Any], status: str, **reason_and_message: str) -> None:
    """Replace the pod's PodScheduled condition with a fresh one of ``status``."""
    pod_status = pod.setdefault("status", {})
    conditions = [c for c in pod_status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    conditions.append(
        {
            "type": "PodScheduled",
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": now(),
            **reason_and_message,
        }
    )
    pod_status["conditions"] = conditions


def _scheduled_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled":
            return cond
    return None
