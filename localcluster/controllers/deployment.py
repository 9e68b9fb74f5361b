"""Deployment controller: ReplicaSets per template, RollingUpdate and Recreate, rollout status.

Follows pkg/controller/deployment (sync.go, rolling.go, recreate.go, progress.go and
util/deployment_util.go): the same scaling arithmetic, annotations, condition reasons and
messages, so that ``kubectl rollout status`` and the deployer read it as a real cluster.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from typing import Any

from ..errors import AlreadyExists
from ..selectors import labels_match, selector_from_label_selector
from ..store import Event
from .base import Controller, Key, controller_of, obj_key
from .deployment_util import (
    DESIRED_REPLICAS,
    HASH_LABEL,
    MAX_REPLICAS,
    REVISION,
    SKIP_COPY,
    condition,
    get_condition,
    parse_time,
    revision_of,
    set_condition,
    spec_replicas,
    status_count,
    surge_and_unavailable,
    template_hash,
    without_hash,
)
from .replicaset import owner_ref

COMPONENT = "deployment-controller"


class DeploymentController(Controller):
    """Rolls Deployments out through ReplicaSets and reports rollout progress."""

    name = "deployment-controller"
    component = COMPONENT
    owns = "deployments.apps"

    def related_keys(self, event: Event) -> Iterable[Key]:
        """The owner of a changed ReplicaSet, or of a deleted pod's ReplicaSet (Recreate)."""
        namespace = event.obj["metadata"].get("namespace", "")
        if event.resource == "replicasets.apps":
            ref = controller_of(event.obj)
            if ref is not None:
                return [(namespace, ref["name"])] if ref.get("kind") == "Deployment" else []
            return self.selecting(namespace, event.obj["metadata"].get("labels") or {})
        if event.resource == "pods" and event.type == "DELETED":
            # Recreate waits for old pods to be gone.
            ref = controller_of(event.obj)
            if ref is not None and ref.get("kind") == "ReplicaSet":
                rs = self.store.peek("replicasets.apps", namespace, ref["name"])
                owner = controller_of(rs) if rs is not None else None
                if owner is not None and owner.get("kind") == "Deployment":
                    return [(namespace, owner["name"])]
        return []

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, key: Key) -> None:
        """One sync of one Deployment (syncDeployment)."""
        d = self.store.peek("deployments.apps", key[0], key[1])
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        selector = selector_from_label_selector(d["spec"].get("selector"))
        if not selector:
            return
        rss = await self._owned_replicasets(d, selector)
        new_rs, old_rss = self._split(d, rss)
        if d["spec"].get("paused"):
            await self._sync_status(d, new_rs, old_rss, paused=True)
            return
        if (d["spec"].get("strategy") or {}).get("type") == "Recreate":
            await self._recreate(d, new_rs, old_rss)
        else:
            await self._rolling(d, new_rs, old_rss)

    async def _owned_replicasets(self, d: dict[str, Any], selector: Any) -> list[dict[str, Any]]:
        namespace = d["metadata"]["namespace"]

        def adoptable(rs: dict[str, Any]) -> bool:
            return not rs["metadata"].get("deletionTimestamp") and labels_match(
                selector, rs["metadata"].get("labels") or {}
            )

        def add_owner(current: dict[str, Any]) -> None:
            current["metadata"].setdefault("ownerReferences", []).append(owner_ref(d))

        async def adopt(rs: dict[str, Any]) -> dict[str, Any]:
            return await self.store.mutate(
                "replicasets.apps", namespace, rs["metadata"]["name"], add_owner
            )

        return await self.claim("replicasets.apps", d, adoptable, adopt)

    def _split(
        self, d: dict[str, Any], rss: list[dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        wanted = without_hash(d["spec"].get("template") or {})
        # The oldest matching ReplicaSet is the new one (FindNewReplicaSet sorts by creation).
        matching = sorted(
            (rs for rs in rss if without_hash(rs["spec"].get("template") or {}) == wanted),
            key=lambda rs: rs["metadata"].get("creationTimestamp", ""),
        )
        new_rs = matching[0] if matching else None
        old = [
            rs for rs in rss if new_rs is None or rs["metadata"]["uid"] != new_rs["metadata"]["uid"]
        ]
        return new_rs, old

    # ------------------------------------------------------------------ new ReplicaSet

    async def _ensure_new_rs(
        self,
        d: dict[str, Any],
        new_rs: dict[str, Any] | None,
        old_rss: list[dict[str, Any]],
        replicas: int,
    ) -> dict[str, Any]:
        """Get or create the ReplicaSet for the current template (getNewReplicaSet)."""
        max_old = max((revision_of(rs) for rs in old_rss), default=0)
        revision = max_old + 1
        surge, _ = surge_and_unavailable(d)
        desired = int(d["spec"].get("replicas", 1))
        namespace = d["metadata"]["namespace"]
        if new_rs is not None:
            annotations = new_rs["metadata"].get("annotations") or {}
            wants = {
                REVISION: str(revision_of(new_rs) if revision_of(new_rs) > max_old else revision),
                DESIRED_REPLICAS: str(desired),
                MAX_REPLICAS: str(desired + surge),
            }
            if any(annotations.get(k) != v for k, v in wants.items()) or int(
                new_rs["spec"].get("minReadySeconds") or 0
            ) != int(d["spec"].get("minReadySeconds") or 0):

                def update(current: dict[str, Any]) -> None:
                    current["metadata"].setdefault("annotations", {}).update(wants)
                    current["spec"]["minReadySeconds"] = int(d["spec"].get("minReadySeconds") or 0)

                new_rs = await self.store.mutate(
                    "replicasets.apps", namespace, new_rs["metadata"]["name"], update
                )
            await self._set_progressing_found(d, new_rs)
            return new_rs
        collision = (d.get("status") or {}).get("collisionCount")
        template = copy.deepcopy(d["spec"].get("template") or {})
        pod_hash = template_hash(without_hash(template), collision)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        annotations = {
            k: v for k, v in (d["metadata"].get("annotations") or {}).items() if k not in SKIP_COPY
        }
        annotations.update(
            {
                REVISION: str(revision),
                DESIRED_REPLICAS: str(desired),
                MAX_REPLICAS: str(desired + surge),
            }
        )
        name = f"{d['metadata']['name']}-{pod_hash}"
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [owner_ref(d)],
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": int(d["spec"].get("minReadySeconds") or 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            created = await self.store.create("replicasets.apps", namespace, rs)
        except AlreadyExists:
            # A hash collision with a ReplicaSet of another template: bump collisionCount.
            def bump(current: dict[str, Any]) -> None:
                status = current.setdefault("status", {})
                status["collisionCount"] = int(status.get("collisionCount") or 0) + 1

            await self.store.mutate(
                "deployments.apps", namespace, d["metadata"]["name"], bump, subresource="status"
            )
            raise
        if replicas > 0:
            self._scaled_event(d, created, 0, replicas)
        message = f'Created new replica set "{name}"'

        def progressing(current: dict[str, Any]) -> None:
            status = current.setdefault("status", {})
            set_condition(status, condition("Progressing", "True", "NewReplicaSetCreated", message))

        await self.store.mutate(
            "deployments.apps", namespace, d["metadata"]["name"], progressing, subresource="status"
        )
        return created

    async def _set_progressing_found(self, d: dict[str, Any], new_rs: dict[str, Any]) -> None:
        status = d.get("status") or {}
        if get_condition(status, "Progressing") is not None:
            return
        message = f'Found new replica set "{new_rs["metadata"]["name"]}"'

        def found(current: dict[str, Any]) -> None:
            set_condition(
                current.setdefault("status", {}),
                condition("Progressing", "True", "FoundNewReplicaSet", message),
            )

        await self.store.mutate(
            "deployments.apps",
            d["metadata"]["namespace"],
            d["metadata"]["name"],
            found,
            subresource="status",
        )

    async def _apply_revision(
        self, d: dict[str, Any], new_rs: dict[str, Any] | None
    ) -> dict[str, Any]:
        if new_rs is None:
            return d
        revision = str(revision_of(new_rs))
        if (d["metadata"].get("annotations") or {}).get(REVISION) == revision:
            return d

        def annotate(current: dict[str, Any]) -> None:
            current["metadata"].setdefault("annotations", {})[REVISION] = revision

        return await self.store.mutate(
            "deployments.apps", d["metadata"]["namespace"], d["metadata"]["name"], annotate
        )

    # ------------------------------------------------------------------ scaling

    def _scaled_event(self, d: dict[str, Any], rs: dict[str, Any], old: int, new: int) -> None:
        direction = "up" if new > old else "down"
        self.recorder.record(
            d,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {rs['metadata']['name']} from {old} to {new}",
            COMPONENT,
        )

    async def _scale(self, d: dict[str, Any], rs: dict[str, Any], replicas: int) -> dict[str, Any]:
        old = spec_replicas(rs)
        surge, _ = surge_and_unavailable(d)
        desired = int(d["spec"].get("replicas", 1))
        annotations = {DESIRED_REPLICAS: str(desired), MAX_REPLICAS: str(desired + surge)}
        current_annotations = rs["metadata"].get("annotations") or {}
        if old == replicas and all(current_annotations.get(k) == v for k, v in annotations.items()):
            return rs

        def scale(current: dict[str, Any]) -> None:
            current["spec"]["replicas"] = replicas
            current["metadata"].setdefault("annotations", {}).update(annotations)

        updated = await self.store.mutate(
            "replicasets.apps", rs["metadata"]["namespace"], rs["metadata"]["name"], scale
        )
        if old != replicas:
            self._scaled_event(d, updated, old, replicas)
        return updated

    async def _rolling(
        self, d: dict[str, Any], new_rs: dict[str, Any] | None, old_rss: list[dict[str, Any]]
    ) -> None:
        desired = int(d["spec"].get("replicas", 1))
        surge, unavailable = surge_and_unavailable(d)
        if new_rs is None:
            # NewRSNewReplicas: start as large as the surge allows.
            current = sum(spec_replicas(rs) for rs in old_rss)
            start = (
                desired
                if not any(spec_replicas(rs) for rs in old_rss)
                else max(min(desired + surge - current, desired), 0)
            )
            new_rs = await self._ensure_new_rs(d, None, old_rss, start)
        else:
            new_rs = await self._ensure_new_rs(d, new_rs, old_rss, spec_replicas(new_rs))
            # reconcileNewReplicaSet
            new_replicas = spec_replicas(new_rs)
            if new_replicas > desired:
                new_rs = await self._scale(d, new_rs, desired)
            elif new_replicas < desired:
                total = sum(spec_replicas(rs) for rs in old_rss) + new_replicas
                max_total = desired + surge
                if total < max_total:
                    up = min(max_total - total, desired - new_replicas)
                    new_rs = await self._scale(d, new_rs, new_replicas + up)
            else:
                new_rs = await self._scale(d, new_rs, new_replicas)
        old_rss = await self._reconcile_old(d, new_rs, old_rss, desired, unavailable)
        await self._finish(d, new_rs, old_rss)

    async def _reconcile_old(
        self,
        d: dict[str, Any],
        new_rs: dict[str, Any],
        old_rss: list[dict[str, Any]],
        desired: int,
        unavailable: int,
    ) -> list[dict[str, Any]]:
        """reconcileOldReplicaSets: scale old ReplicaSets down without breaking availability."""
        if sum(spec_replicas(rs) for rs in old_rss) == 0:
            return old_rss
        all_pods = sum(spec_replicas(rs) for rs in old_rss) + spec_replicas(new_rs)
        min_available = desired - unavailable
        new_unavailable = spec_replicas(new_rs) - status_count(new_rs, "availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return old_rss
        by_age = sorted(old_rss, key=lambda rs: rs["metadata"].get("creationTimestamp", ""))
        result: dict[str, dict[str, Any]] = {rs["metadata"]["uid"]: rs for rs in old_rss}
        # cleanupUnhealthyReplicas: unavailable old pods go first, they cost no availability.
        cleaned = 0
        for rs in by_age:
            if cleaned >= max_scaled_down:
                break
            unhealthy = spec_replicas(rs) - status_count(rs, "availableReplicas")
            if spec_replicas(rs) == 0 or unhealthy <= 0:
                continue
            down = min(max_scaled_down - cleaned, unhealthy)
            result[rs["metadata"]["uid"]] = await self._scale(d, rs, spec_replicas(rs) - down)
            cleaned += down
        # scaleDownOldReplicaSetsForRollingUpdate
        current = list(result.values())
        available = sum(status_count(rs, "availableReplicas") for rs in current) + status_count(
            new_rs, "availableReplicas"
        )
        if available > min_available:
            remaining = min(available - min_available, max_scaled_down - cleaned)
            for rs in sorted(current, key=lambda rs: rs["metadata"].get("creationTimestamp", "")):
                if remaining <= 0:
                    break
                if spec_replicas(rs) == 0:
                    continue
                down = min(spec_replicas(rs), remaining)
                result[rs["metadata"]["uid"]] = await self._scale(d, rs, spec_replicas(rs) - down)
                remaining -= down
        return list(result.values())

    async def _recreate(
        self, d: dict[str, Any], new_rs: dict[str, Any] | None, old_rss: list[dict[str, Any]]
    ) -> None:
        desired = int(d["spec"].get("replicas", 1))
        scaled = [await self._scale(d, rs, 0) for rs in old_rss]
        old_uids = {rs["metadata"]["uid"] for rs in old_rss}
        namespace = d["metadata"]["namespace"]
        old_running = any(
            (controller_of(e.obj) or {}).get("uid") in old_uids
            and (e.obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            for e in self.store.select("pods", namespace)
        )
        if old_running:
            await self._sync_status(await self._apply_revision(d, new_rs), new_rs, scaled)
            return
        if new_rs is None:
            new_rs = await self._ensure_new_rs(d, None, scaled, desired)
        else:
            new_rs = await self._ensure_new_rs(d, new_rs, scaled, spec_replicas(new_rs))
            new_rs = await self._scale(d, new_rs, desired)
        await self._finish(d, new_rs, scaled)

    # ------------------------------------------------------------------ status

    async def _finish(
        self, d: dict[str, Any], new_rs: dict[str, Any], old_rss: list[dict[str, Any]]
    ) -> None:
        d = (
            self.store.peek("deployments.apps", d["metadata"]["namespace"], d["metadata"]["name"])
            or d
        )
        d = await self._apply_revision(d, new_rs)
        status = await self._sync_status(d, new_rs, old_rss)
        if status is not None and self._complete(d, status):
            await self._cleanup(d, old_rss)

    @staticmethod
    def _complete(d: dict[str, Any], status: dict[str, Any]) -> bool:
        desired = int(d["spec"].get("replicas", 1))
        return (
            status.get("updatedReplicas", 0) == desired
            and status.get("replicas", 0) == desired
            and status.get("availableReplicas", 0) == desired
            and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
        )

    async def _cleanup(self, d: dict[str, Any], old_rss: list[dict[str, Any]]) -> None:
        limit = int(d["spec"].get("revisionHistoryLimit", 10))
        idle = [
            rs
            for rs in old_rss
            if spec_replicas(rs) == 0
            and status_count(rs, "replicas") == 0
            and not rs["metadata"].get("deletionTimestamp")
        ]
        if len(idle) <= limit:
            return
        idle.sort(key=lambda rs: (revision_of(rs), rs["metadata"].get("creationTimestamp", "")))
        for rs in idle[: len(idle) - limit]:
            await self.store.delete(
                "replicasets.apps", rs["metadata"]["namespace"], rs["metadata"]["name"]
            )

    async def _sync_status(
        self,
        d: dict[str, Any],
        new_rs: dict[str, Any] | None,
        old_rss: list[dict[str, Any]],
        paused: bool = False,
    ) -> dict[str, Any] | None:
        """calculateStatus plus syncRolloutStatus; returns the status written."""
        namespace, name = d["metadata"]["namespace"], d["metadata"]["name"]
        fresh = self.store.peek("deployments.apps", namespace, name)
        if fresh is None:
            return None
        d = fresh
        # Re-read ReplicaSets: their status moved since the caller looked.
        all_rss = [
            self.store.peek("replicasets.apps", namespace, rs["metadata"]["name"]) for rs in old_rss
        ]
        live_new = (
            self.store.peek("replicasets.apps", namespace, new_rs["metadata"]["name"])
            if new_rs
            else None
        )
        rss = [rs for rs in [*all_rss, live_new] if rs is not None]
        desired = int(d["spec"].get("replicas", 1))
        _, unavailable = surge_and_unavailable(d)
        old_status = d.get("status") or {}
        available = sum(status_count(rs, "availableReplicas") for rs in rss)
        total_spec = sum(spec_replicas(rs) for rs in rss)
        status: dict[str, Any] = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": sum(status_count(rs, "replicas") for rs in rss),
            "updatedReplicas": status_count(live_new, "replicas") if live_new else 0,
            "readyReplicas": sum(status_count(rs, "readyReplicas") for rs in rss),
            "availableReplicas": available,
            "unavailableReplicas": max(total_spec - available, 0),
        }
        if old_status.get("collisionCount") is not None:
            status["collisionCount"] = old_status["collisionCount"]
        status["conditions"] = copy.deepcopy(old_status.get("conditions") or [])
        if available >= desired - unavailable:
            set_condition(
                status,
                condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                ),
            )
        else:
            set_condition(
                status,
                condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                ),
            )
        self._progress(d, status, old_status, live_new, paused)
        # Zero counts are omitted on the wire (omitempty).
        wire = {k: v for k, v in status.items() if v not in (0, None) or k == "observedGeneration"}
        if wire != old_status:

            def apply(current: dict[str, Any]) -> None:
                current["status"] = wire

            await self.store.mutate(
                "deployments.apps", namespace, name, apply, subresource="status", copy_result=False
            )
        return status

    def _progress(
        self,
        d: dict[str, Any],
        status: dict[str, Any],
        old_status: dict[str, Any],
        new_rs: dict[str, Any] | None,
        paused: bool,
    ) -> None:
        deadline = d["spec"].get("progressDeadlineSeconds")
        if deadline is None or int(deadline) >= 2**31 - 1:
            status["conditions"] = [c for c in status["conditions"] if c["type"] != "Progressing"]
            return
        current = get_condition(status, "Progressing")
        if paused:
            if current is None or current.get("reason") != "DeploymentPaused":
                set_condition(
                    status,
                    condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused"),
                )
            return
        if current is not None and current.get("reason") == "DeploymentPaused":
            set_condition(
                status,
                condition("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed"),
            )
            current = get_condition(status, "Progressing")
        if current is not None and current.get("reason") == "ProgressDeadlineExceeded":
            return
        rs_name = new_rs["metadata"]["name"] if new_rs else ""
        old_old = int(old_status.get("replicas") or 0) - int(old_status.get("updatedReplicas") or 0)
        new_old = status["replicas"] - status["updatedReplicas"]
        progressing = (
            status["updatedReplicas"] > int(old_status.get("updatedReplicas") or 0)
            or new_old < old_old
            or status["readyReplicas"] > int(old_status.get("readyReplicas") or 0)
            or status["availableReplicas"] > int(old_status.get("availableReplicas") or 0)
        )
        key = obj_key(d)
        if new_rs is not None and self._complete(d, status):
            set_condition(
                status,
                condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{rs_name}" has successfully progressed.',
                ),
            )
        elif progressing:
            cond = condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
            )
            if current is not None and current["status"] == "True":
                cond["lastTransitionTime"] = current["lastTransitionTime"]
            status["conditions"] = [
                c for c in status["conditions"] if c["type"] != "Progressing"
            ] + [cond]
            self.requeue(key, int(deadline) + 0.5)
        elif current is not None and current.get("reason") != "NewReplicaSetAvailable":
            since = parse_time(current["lastUpdateTime"])
            left = (since - dt.datetime.now(dt.UTC)).total_seconds() + int(deadline)
            if left <= 0:
                set_condition(
                    status,
                    condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        f'ReplicaSet "{rs_name}" has timed out progressing.',
                    ),
                )
            else:
                self.requeue(key, left + 0.5)
