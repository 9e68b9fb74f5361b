"""ReplicaSet controller: keeps spec.replicas pods per ReplicaSet and reports their status."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from typing import Any

from ..errors import NotFound, StatusError
from ..selectors import labels_match, selector_from_label_selector
from ..store import Event
from .base import Controller, Key, controller_of, obj_key

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


def deletion_order(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods in the order a ReplicaSet deletes them (controller.ActivePodsWithRanks).

    Unassigned before assigned, Pending before Unknown before Running, not ready before ready,
    more restarts first, newer first.
    """

    def rank(pod: dict[str, Any]) -> tuple[int, int, int, int]:
        status = pod.get("status") or {}
        phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(
            status.get("phase", "Pending"), 0
        )
        restarts = sum(
            int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or []
        )
        return (
            1 if pod["spec"].get("nodeName") else 0,
            phase_rank,
            1 if pod_ready(pod) else 0,
            -restarts,
        )

    newest_first = sorted(
        pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True
    )
    return sorted(newest_first, key=rank)


class ReplicaSetController(Controller):
    """Creates and deletes pods so that each ReplicaSet has spec.replicas of them."""

    name = "replicaset-controller"
    component = COMPONENT

    def initial_keys(self) -> Iterable[Key]:
        """Every ReplicaSet."""
        return [obj_key(e.obj) for e in self.store.select("replicasets.apps")]

    def keys_for(self, event: Event) -> Iterable[Key]:
        """The ReplicaSet itself, or the owner (or would-be owner) of a changed pod."""
        if event.resource == "replicasets.apps":
            return [obj_key(event.obj)]
        if event.resource != "pods":
            return []
        ref = controller_of(event.obj)
        namespace = event.obj["metadata"]["namespace"]
        if ref is not None:
            return [(namespace, ref["name"])] if ref.get("kind") == "ReplicaSet" else []
        # An orphan pod may be adopted by a ReplicaSet whose selector matches it.
        labels = event.obj["metadata"].get("labels") or {}
        keys = []
        for entry in self.store.select("replicasets.apps", namespace):
            selector = selector_from_label_selector(entry.obj["spec"].get("selector"))
            if selector and labels_match(selector, labels):
                keys.append(obj_key(entry.obj))
        return keys

    async def reconcile(self, key: Key) -> None:
        """Adopt, create or delete pods, then write status."""
        rs = self.store.peek("replicasets.apps", key[0], key[1])
        if rs is None:
            return
        namespace = key[0]
        uid = rs["metadata"]["uid"]
        selector = selector_from_label_selector(rs["spec"].get("selector")) or ()
        pods = []
        for entry in self.store.select("pods", namespace):
            pod = entry.obj
            ref = controller_of(pod)
            if ref is not None:
                if ref.get("uid") == uid:
                    pods.append(pod)
                continue
            if (
                selector
                and not rs["metadata"].get("deletionTimestamp")
                and pod_active(pod)
                and labels_match(selector, pod["metadata"].get("labels") or {})
            ):
                pods.append(await self._adopt(rs, pod))
        active = [p for p in pods if pod_active(p)]
        if not rs["metadata"].get("deletionTimestamp"):
            wanted = int(rs["spec"].get("replicas", 1))
            if len(active) < wanted:
                await self._create(rs, wanted - len(active))
            elif len(active) > wanted:
                await self._delete(rs, deletion_order(active)[: len(active) - wanted])
        await self._write_status(key)

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
            for e in self.store.select("pods", key[0])
            if (controller_of(e.obj) or {}).get("uid") == uid and pod_active(e.obj)
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

        await self.store.mutate("replicasets.apps", key[0], key[1], apply, subresource="status")
