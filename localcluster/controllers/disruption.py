"""Disruption controller: PodDisruptionBudget status, which the Eviction API consults."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

from ..selectors import selector_from_label_selector
from ..store import Event
from .base import Controller, Key, controller_of
from .replicaset import pod_ready

COMPONENT = "controllermanager"
# An evicted pod counts as disrupted (not healthy) until it is gone or this long has passed.
DELETION_TIMEOUT = dt.timedelta(minutes=2)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(stamp: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        return None


class DisruptionController(Controller):
    """Computes currentHealthy, desiredHealthy, expectedPods and disruptionsAllowed per budget."""

    name = "disruption-controller"
    component = COMPONENT
    owns = "poddisruptionbudgets.policy"

    def related_keys(self, event: Event) -> Iterable[Key]:
        """The budgets that select a changed pod, or the pods of a workload whose replicas changed."""
        if event.resource not in ("pods", "replicasets.apps", "deployments.apps"):
            return []
        namespace = event.obj["metadata"].get("namespace", "")
        if event.resource == "pods":
            labels = event.obj["metadata"].get("labels") or {}
            return self.selecting(namespace, labels, empty_matches_all=True)
        # Only a workload's replicas enter a budget (its expected scale).
        replicas = (event.obj.get("spec") or {}).get("replicas")
        old_spec = (event.old or {}).get("spec") or {}
        if (
            event.type == "MODIFIED"
            and event.old is not None
            and old_spec.get("replicas") == replicas
        ):
            return []
        # The budgets of the pods this workload controls, directly or through its ReplicaSets.
        keys: dict[Key, None] = {}
        for pod in self._controlled_pods(event.resource, event.obj):
            labels = pod["metadata"].get("labels") or {}
            for key in self.selecting(namespace, labels, empty_matches_all=True):
                keys[key] = None
        return list(keys)

    def _controlled_pods(self, resource: str, workload: dict[str, Any]) -> list[dict[str, Any]]:
        uid = workload["metadata"]["uid"]
        pods = [e.obj for e in self.store.controlled_by("pods", uid)]
        if resource == "deployments.apps":
            pods += [
                pod.obj
                for rs in self.store.controlled_by("replicasets.apps", uid)
                for pod in self.store.controlled_by("pods", rs.obj["metadata"]["uid"])
            ]
        return pods

    def _expected_scale(self, pods: list[dict[str, Any]]) -> int | None:
        """Sum of the replicas of the pods' top-level controllers (getExpectedScale)."""
        seen: dict[str, int] = {}
        for pod in pods:
            ref = controller_of(pod)
            if ref is None:
                return None  # a bare pod: percentages and maxUnavailable cannot be resolved
            namespace = pod["metadata"]["namespace"]
            if ref.get("kind") == "ReplicaSet":
                rs = self.store.peek("replicasets.apps", namespace, ref["name"])
                if rs is None:
                    continue
                owner = controller_of(rs)
                if owner is not None and owner.get("kind") == "Deployment":
                    deploy = self.store.peek("deployments.apps", namespace, owner["name"])
                    if deploy is not None:
                        seen[deploy["metadata"]["uid"]] = int(deploy["spec"].get("replicas", 1))
                        continue
                seen[rs["metadata"]["uid"]] = int(rs["spec"].get("replicas", 1))
            elif ref.get("kind") == "Deployment":
                deploy = self.store.peek("deployments.apps", namespace, ref["name"])
                if deploy is not None:
                    seen[deploy["metadata"]["uid"]] = int(deploy["spec"].get("replicas", 1))
            else:
                return None
        return sum(seen.values())

    async def reconcile(self, key: Key) -> None:
        """Recompute one budget's status."""
        pdb = self.store.peek("poddisruptionbudgets.policy", key[0], key[1])
        if pdb is None or pdb["metadata"].get("deletionTimestamp"):
            return
        spec = pdb.get("spec") or {}
        selector = selector_from_label_selector(spec.get("selector"))
        pods = []
        if selector:
            pods = [e.obj for e in self.store.select("pods", key[0], selector)]
        old_status = pdb.get("status") or {}
        now = _now()
        disrupted: dict[str, str] = {}
        names = {p["metadata"]["name"]: p for p in pods}
        for name, stamp in (old_status.get("disruptedPods") or {}).items():
            pod = names.get(name)
            when = _parse(stamp)
            if pod is None or pod["metadata"].get("deletionTimestamp") or when is None:
                continue
            if when + DELETION_TIMEOUT > now:
                disrupted[name] = stamp
                self.requeue(key, (when + DELETION_TIMEOUT - now).total_seconds() + 0.1)
        healthy = sum(
            1
            for p in pods
            if pod_ready(p)
            and not p["metadata"].get("deletionTimestamp")
            and p["metadata"]["name"] not in disrupted
        )
        min_available = spec.get("minAvailable")
        max_unavailable = spec.get("maxUnavailable")
        expected: int | None
        if max_unavailable is not None:
            expected = self._expected_scale(pods)
            desired = 0
            if expected is not None:
                if isinstance(max_unavailable, str) and max_unavailable.endswith("%"):
                    unavailable = math.ceil(int(max_unavailable[:-1]) * expected / 100)
                else:
                    unavailable = int(max_unavailable)
                desired = max(expected - unavailable, 0)
        elif isinstance(min_available, str) and min_available.endswith("%"):
            expected = self._expected_scale(pods)
            desired = math.ceil(int(min_available[:-1]) * (expected or 0) / 100)
        else:
            expected = len(pods)
            desired = int(min_available or 0)
        allowed = healthy - desired
        if not expected or allowed <= 0:
            allowed = 0
        status: dict[str, Any] = {
            "observedGeneration": pdb["metadata"].get("generation", 1),
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "disruptionsAllowed": allowed,
            "expectedPods": expected or 0,
        }
        if disrupted:
            status["disruptedPods"] = disrupted
        ok = allowed > 0
        previous = next(
            (c for c in old_status.get("conditions") or [] if c.get("type") == "DisruptionAllowed"),
            None,
        )
        changed = previous is None or previous.get("status") != ("True" if ok else "False")
        status["conditions"] = [
            {
                "type": "DisruptionAllowed",
                "status": "True" if ok else "False",
                "reason": "SufficientPods" if ok else "InsufficientPods",
                "message": "",
                "observedGeneration": pdb["metadata"].get("generation", 1),
                "lastTransitionTime": _stamp(now) if changed else previous["lastTransitionTime"],  # type: ignore[index]
            }
        ]
        if status == old_status:
            return

        def apply(current: dict[str, Any]) -> None:
            current["status"] = status

        await self.store.mutate(
            "poddisruptionbudgets.policy", key[0], key[1], apply, subresource="status"
        )
