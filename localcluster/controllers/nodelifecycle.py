"""Node lifecycle: the cordon taint, and removal of pods whose node is gone (pod GC)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import NotFound
from ..kubelet_status import now
from ..store import Event
from .base import Controller, Key

COMPONENT = "node-controller"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


class NodeLifecycleController(Controller):
    """Keeps the unschedulable taint in step with spec.unschedulable; deletes orphaned pods."""

    name = "node-lifecycle-controller"
    component = COMPONENT

    def initial_keys(self) -> Iterable[Key]:
        """Every node, and every node name a pod is bound to."""
        names = {e.obj["metadata"]["name"] for e in self.store.select("nodes")}
        for entry in self.store.select("pods"):
            node = (entry.obj.get("spec") or {}).get("nodeName")
            if node:
                names.add(node)
        return [("", name) for name in sorted(names)]

    def keys_for(self, event: Event) -> Iterable[Key]:
        """A changed node; a pod bound to a node that does not exist."""
        if event.resource == "nodes":
            return [("", event.obj["metadata"]["name"])]
        if event.resource == "pods" and event.type != "DELETED":
            node = (event.obj.get("spec") or {}).get("nodeName")
            if node and self.store.peek("nodes", None, node) is None:
                return [("", node)]
        return []

    async def reconcile(self, key: Key) -> None:
        """Sync the taint of one node, or delete the pods of a deleted one."""
        name = key[1]
        node = self.store.peek("nodes", None, name)
        if node is None:
            await self._delete_orphans(name)
            return
        spec = node.get("spec") or {}
        taints = spec.get("taints") or []
        has_taint = any(t.get("key") == UNSCHEDULABLE_TAINT for t in taints)
        cordoned = bool(spec.get("unschedulable"))
        if cordoned == has_taint:
            return

        def sync(current: dict[str, Any]) -> None:
            current_spec = current.setdefault("spec", {})
            kept = [
                t for t in current_spec.get("taints") or [] if t.get("key") != UNSCHEDULABLE_TAINT
            ]
            if current_spec.get("unschedulable"):
                kept.append(
                    {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule", "timeAdded": now()}
                )
            if kept:
                current_spec["taints"] = kept
            else:
                current_spec.pop("taints", None)

        updated = await self.store.mutate("nodes", None, name, sync)
        reason = "NodeNotSchedulable" if cordoned else "NodeSchedulable"
        self.recorder.record(
            updated, "Normal", reason, f"Node {name} status is now: {reason}", "kubelet", name
        )

    async def _delete_orphans(self, node: str) -> None:
        for entry in self.store.select("pods", None, None, f"spec.nodeName={node}"):
            meta = entry.obj["metadata"]
            try:
                await self.store.delete(
                    "pods",
                    meta["namespace"],
                    meta["name"],
                    grace_period_seconds=0,
                    preconditions={"uid": meta["uid"]},
                )
            except NotFound:
                continue
            self.recorder.record(
                entry.obj,
                "Normal",
                "TaintManagerEviction",
                f"Deleting pod {meta['namespace']}/{meta['name']}: its node {node} no longer exists",
                "pod-garbage-collector",
            )
