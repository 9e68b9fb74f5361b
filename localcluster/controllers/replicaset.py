"""ReplicaSet controller: keeps spec.replicas pods per ReplicaSet and reports their status."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..errors import NotFound, StatusError
from ..selectors import labels_match, selector_from_label_selector
from ..store import Event
from .base import Controller, Key, controller_of

COMPONENT = "replicaset-controller"


def pod_ready(pod: dict[str, Any]) -> bool:
    """Whether the pod's Ready condition is True."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def ready_for(pod: dict[str, Any], now: dt.datetime) -> float | None:
    """Seconds the pod has been Ready, or None if it is not Ready."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            stamp = cond.get("lastTransitionTime")
            return (now - _parse(stamp)).total_seconds() if stamp else 0.0
    return None


def pod_available(pod: dict[str, Any], min_ready_seconds: int, now: dt.datetime) -> bool:
    """Ready for at least minReadySeconds (podutil.IsPodAvailable)."""
    seconds = ready_for(pod, now)
    return seconds is not None and (min_ready_seconds == 0 or seconds >= min_ready_seconds)


def pod_active(pod: dict[str, Any]) -> bool:
    """Not terminating and not finished (controller.IsPodActive)."""
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get(
        "phase"
    ) not in ("Succeeded", "Failed")


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    """A controller ownerReference to ``owner``."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# What helper.GetDeletionCostFromPodAnnotations accepts: no "+", no leading zeros.
_DELETION_COST = re.compile(r"-[0-9]+|0|[1-9][0-9]*")
_INT32 = range(-(2**31), 2**31)
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_cost(pod: dict[str, Any]) -> int:
    """The pod's pod-deletion-cost annotation as an int32; 0 when unset or invalid."""
    value = (pod["metadata"].get("annotations") or {}).get(POD_DELETION_COST)
    if not isinstance(value, str) or not _DELETION_COST.fullmatch(value):
        return 0
    cost = int(value)
    return cost if cost in _INT32 else 0


def _stamp(value: str | None) -> dt.datetime | None:
    # A missing or unparsable time is Go's zero time.
    if not value:
        return None
    try:
        return _parse(value)
    except ValueError:
        return None


def _ready_since(pod: dict[str, Any]) -> dt.datetime | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return _stamp(cond.get("lastTransitionTime"))
    return None


def _max_restarts(pod: dict[str, Any]) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return max((int(c.get("restartCount") or 0) for c in statuses), default=0)


def _log_rank(stamp: dt.datetime, now: dt.datetime) -> int:
    # int64(math.Log2(float64(now.Sub(t)))): whole powers of two of nanoseconds, -1 if not past.
    age = now - stamp
    nanoseconds = (age.days * 86_400 + age.seconds) * 10**9 + age.microseconds * 1_000
    return nanoseconds.bit_length() - 1 if nanoseconds > 0 else -1


def _time_order(
    a: dt.datetime | None,
    b: dt.datetime | None,
    now: dt.datetime | None,
    uids: tuple[str, str],
) -> int:
    """-1 if time ``a`` puts its pod first: zero, else later (by log bucket then UID with ``now``)."""
    if now is None or a is None or b is None:
        # afterOrZero: the zero time first, then the later time.
        if a is None or b is None:
            return -1 if a is None else 1
        return -1 if a > b else 1
    diff = _log_rank(a, now) - _log_rank(b, now)
    if diff == 0:
        return -1 if uids[0] < uids[1] else 1
    return -1 if diff < 0 else 1


def deletion_order(
    pods: list[dict[str, Any]],
    related: list[dict[str, Any]] | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Pods in the order a ReplicaSet deletes them (controller.ActivePodsWithRanks.Less).

    Unassigned before assigned; Pending, Unknown, then Running; not ready before ready; lower
    pod-deletion-cost first; more active ``related`` pods (default: ``pods``) on the same node
    first; ready for less time first; more restarts first; newer first. With ``now``, times
    compare in logarithmic buckets with ties broken by UID (LogarithmicScaleDown, GA in 1.31).
    """
    on_node = Counter(
        p["spec"].get("nodeName") or ""
        for p in (pods if related is None else related)
        if pod_active(p)
    )

    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        node_a, node_b = a["spec"].get("nodeName") or "", b["spec"].get("nodeName") or ""
        if node_a != node_b and not (node_a and node_b):
            return -1 if not node_a else 1
        phase_a = _PHASE_ORDINAL.get((a.get("status") or {}).get("phase", ""), 0)
        phase_b = _PHASE_ORDINAL.get((b.get("status") or {}).get("phase", ""), 0)
        if phase_a != phase_b:
            return phase_a - phase_b
        ready_a, ready_b = pod_ready(a), pod_ready(b)
        if ready_a != ready_b:
            return -1 if not ready_a else 1
        cost_a, cost_b = deletion_cost(a), deletion_cost(b)
        if cost_a != cost_b:
            return -1 if cost_a < cost_b else 1
        if on_node[node_a] != on_node[node_b]:
            return -1 if on_node[node_a] > on_node[node_b] else 1
        uids = (a["metadata"].get("uid", ""), b["metadata"].get("uid", ""))
        if ready_a and ready_b:
            since_a, since_b = _ready_since(a), _ready_since(b)
            if since_a != since_b:
                return _time_order(since_a, since_b, now, uids)
        restarts_a, restarts_b = _max_restarts(a), _max_restarts(b)
        if restarts_a != restarts_b:
            return -1 if restarts_a > restarts_b else 1
        created_a = _stamp(a["metadata"].get("creationTimestamp"))
        created_b = _stamp(b["metadata"].get("creationTimestamp"))
        if created_a != created_b:
            return _time_order(created_a, created_b, now, uids)
        return 0

    return sorted(pods, key=functools.cmp_to_key(compare))


class ReplicaSetController(Controller):
    """Creates and deletes pods so that each ReplicaSet has spec.replicas of them."""

    name = "replicaset-controller"
    component = COMPONENT
    owns = "replicasets.apps"

    def related_keys(self, event: Event) -> Iterable[Key]:
        """The owner (or would-be owner) of a changed pod."""
        if event.resource != "pods":
            return []
        ref = controller_of(event.obj)
        namespace = event.obj["metadata"]["namespace"]
        if ref is not None:
            return [(namespace, ref["name"])] if ref.get("kind") == "ReplicaSet" else []
        # An orphan pod may be adopted by a ReplicaSet whose selector matches it.
        return self.selecting(namespace, event.obj["metadata"].get("labels") or {})

    async def reconcile(self, key: Key) -> None:
        """Adopt, create or delete pods, then write status."""
        rs = self.store.peek("replicasets.apps", key[0], key[1])
        if rs is None:
            return
        selector = selector_from_label_selector(rs["spec"].get("selector")) or ()

        def adoptable(pod: dict[str, Any]) -> bool:
            return bool(
                selector
                and not rs["metadata"].get("deletionTimestamp")
                and pod_active(pod)
                and labels_match(selector, pod["metadata"].get("labels") or {})
            )

        async def adopt(pod: dict[str, Any]) -> dict[str, Any]:
            return await self._adopt(rs, pod)

        pods = await self.claim("pods", rs, adoptable, adopt)
        active = [p for p in pods if pod_active(p)]
        if not rs["metadata"].get("deletionTimestamp"):
            wanted = int(rs["spec"].get("replicas", 1))
            if len(active) < wanted:
                await self._create(rs, wanted - len(active))
            elif len(active) > wanted:
                ranked = deletion_order(active, self._related_pods(rs), dt.datetime.now(dt.UTC))
                await self._delete(rs, ranked[: len(active) - wanted])
        await self._write_status(key)

    def _related_pods(self, rs: dict[str, Any]) -> list[dict[str, Any]]:
        """Pods selected by any ReplicaSet with the same controller (getIndirectlyRelatedPods).

        A ReplicaSet without a controller has none, so no pod ranks as doubled up.
        """
        owner = controller_of(rs)
        if owner is None:
            return []
        namespace = rs["metadata"]["namespace"]
        related: dict[str, dict[str, Any]] = {}
        for entry in self.store.controlled_by("replicasets.apps", str(owner.get("uid"))):
            if entry.obj["metadata"].get("namespace") != namespace:
                continue
            selector = selector_from_label_selector(entry.obj["spec"].get("selector"))
            if selector is None:
                continue
            for pod_entry in self.store.select("pods", namespace, selector):
                pod = pod_entry.obj
                related.setdefault(pod["metadata"]["uid"], pod)
        return list(related.values())

    async def _adopt(self, rs: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
        def adopt(current: dict[str, Any]) -> None:
            refs = current["metadata"].setdefault("ownerReferences", [])
            if not any(r.get("controller") for r in refs):
                refs.append(owner_ref(rs))

        meta = pod["metadata"]
        return await self.store.mutate("pods", meta["namespace"], meta["name"], adopt)

    async def _create(self, rs: dict[str, Any], count: int) -> None:
        template = rs["spec"].get("template") or {}
        rs_name = rs["metadata"]["name"]
        for _ in range(count):
            pod = {
                "metadata": copy.deepcopy(template.get("metadata") or {}),
                "spec": copy.deepcopy(template.get("spec") or {}),
            }
            meta = pod["metadata"]
            meta.pop("name", None)
            meta["generateName"] = f"{rs_name}-"
            meta["namespace"] = rs["metadata"]["namespace"]
            meta["ownerReferences"] = [owner_ref(rs)]
            try:
                created = await self.store.create("pods", rs["metadata"]["namespace"], pod)
            except StatusError as exc:
                self.recorder.record(
                    rs, "Warning", "FailedCreate", f"Error creating: {exc}", COMPONENT
                )
                return
            self.recorder.record(
                rs,
                "Normal",
                "SuccessfulCreate",
                f"Created pod: {created['metadata']['name']}",
                COMPONENT,
            )

    async def _delete(self, rs: dict[str, Any], victims: list[dict[str, Any]]) -> None:
        for pod in victims:
            meta = pod["metadata"]
            try:
                await self.store.delete(
                    "pods", meta["namespace"], meta["name"], preconditions={"uid": meta["uid"]}
                )
            except NotFound:
                continue
            self.recorder.record(
                rs, "Normal", "SuccessfulDelete", f"Deleted pod: {meta['name']}", COMPONENT
            )

    async def _write_status(self, key: Key) -> None:
        rs = self.store.peek("replicasets.apps", key[0], key[1])
        if rs is None:
            return
        uid = rs["metadata"]["uid"]
        min_ready = int(rs["spec"].get("minReadySeconds") or 0)
        now = dt.datetime.now(dt.UTC)
        template_labels = ((rs["spec"].get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        pods = [
            e.obj
            for e in self.store.controlled_by("pods", uid)
            if e.obj["metadata"].get("namespace") == key[0] and pod_active(e.obj)
        ]
        ready = [p for p in pods if pod_ready(p)]
        available = [p for p in ready if pod_available(p, min_ready, now)]
        if min_ready and len(available) < len(ready):
            # Re-check when the next pod crosses minReadySeconds.
            waits = [min_ready - (ready_for(p, now) or 0) for p in ready if p not in available]
            self.requeue(key, max(min(waits), 0) + 0.1)
        labeled = [
            p
            for p in pods
            if all(
                (p["metadata"].get("labels") or {}).get(k) == v for k, v in template_labels.items()
            )
        ]
        status: dict[str, Any] = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(labeled),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        # Zero counts are omitted on the wire (omitempty), except replicas.
        status = {k: v for k, v in status.items() if v or k == "replicas"}
        conditions = (rs.get("status") or {}).get("conditions")
        if conditions:
            status["conditions"] = conditions
        if rs.get("status") == status:
            return

        def apply(current: dict[str, Any]) -> None:
            current["status"] = status

        await self.store.mutate(
            "replicasets.apps", key[0], key[1], apply, subresource="status", copy_result=False
        )
