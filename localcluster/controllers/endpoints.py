"""Endpoints and EndpointSlice controllers: a Service's selected pods and their readiness."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable
from typing import Any

from ..errors import NotFound
from ..store import Event
from .base import Controller, Key, obj_key
from .replicaset import pod_ready

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"


def _target_port(port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for container in pod["spec"].get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == target and declared.get("protocol", "TCP") == port.get(
                "protocol", "TCP"
            ):
                return int(declared["containerPort"])
    return None


def _target_ref(pod: dict[str, Any]) -> dict[str, Any]:
    meta = pod["metadata"]
    return {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}


def _service_ref(svc: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "name": svc["metadata"]["name"],
        "uid": svc["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


class _ServiceController(Controller):
    """Shared plumbing: which Services a pod change concerns."""

    owns = "services"

    def related_keys(self, event: Event) -> Iterable[Key]:
        """Every Service whose selector matches a changed pod before or after."""
        if event.resource != "pods":
            return []
        namespace = event.obj["metadata"]["namespace"]
        label_sets = [event.obj["metadata"].get("labels") or {}]
        if event.old is not None:
            label_sets.append(event.old["metadata"].get("labels") or {})
        keys: dict[Key, None] = {}
        for labels in label_sets:
            for entry in self.store.selecting("services", namespace, labels):
                selector = (entry.obj.get("spec") or {}).get("selector")
                if selector and any(
                    all(ls.get(k) == v for k, v in selector.items()) for ls in label_sets
                ):
                    keys[obj_key(entry.obj)] = None
        return sorted(keys)

    def selected_pods(self, svc: dict[str, Any]) -> list[dict[str, Any]]:
        """Pods with an IP that the Service selects, in name order."""
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            return []
        parsed = tuple((k, "=", frozenset([str(v)])) for k, v in selector.items())
        pods = []
        for entry in self.store.select("pods", svc["metadata"]["namespace"], parsed):
            pod = entry.obj
            status = pod.get("status") or {}
            if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
                continue
            pods.append(pod)
        return pods


class EndpointsController(_ServiceController):
    """Maintains the v1 Endpoints object of every Service with a selector."""

    name = "endpoints-controller"
    component = "endpoint-controller"

    async def reconcile(self, key: Key) -> None:
        """Write the Endpoints for one Service (or delete them with the Service)."""
        svc = self.store.peek("services", key[0], key[1])
        existing = self.store.peek("endpoints", key[0], key[1])
        if svc is None or not (svc.get("spec") or {}).get("selector"):
            if svc is None and existing is not None:
                with contextlib.suppress(NotFound):
                    await self.store.delete("endpoints", key[0], key[1])
            return
        publish_not_ready = bool(svc["spec"].get("publishNotReadyAddresses"))
        subsets: dict[str, dict[str, Any]] = {}
        for pod in self.selected_pods(svc):
            if pod["metadata"].get("deletionTimestamp") and not publish_not_ready:
                continue
            ports = []
            for port in svc["spec"].get("ports") or []:
                number = _target_port(port, pod)
                if number is None:
                    continue
                item = {"port": number, "protocol": port.get("protocol", "TCP")}
                if port.get("name"):
                    item["name"] = port["name"]
                if port.get("appProtocol"):
                    item["appProtocol"] = port["appProtocol"]
                ports.append(item)
            if not ports and svc["spec"].get("ports"):
                continue
            signature = repr(sorted((p.get("name", ""), p["port"]) for p in ports))
            subset = subsets.setdefault(signature, {"ports": ports})
            address = {"ip": pod["status"]["podIP"], "targetRef": _target_ref(pod)}
            if pod["spec"].get("nodeName"):
                address["nodeName"] = pod["spec"]["nodeName"]
            bucket = "addresses" if pod_ready(pod) or publish_not_ready else "notReadyAddresses"
            subset.setdefault(bucket, []).append(address)
        rendered = []
        for subset in subsets.values():
            for bucket in ("addresses", "notReadyAddresses"):
                if bucket in subset:
                    subset[bucket].sort(key=lambda a: a["ip"])
            ordered = {
                k: subset[k] for k in ("addresses", "notReadyAddresses", "ports") if k in subset
            }
            rendered.append(ordered)
        labels = dict(svc["metadata"].get("labels") or {})
        labels["endpoints.kubernetes.io/managed-by"] = "endpoint-controller"
        if (
            existing is not None
            and existing.get("subsets", []) == rendered
            and (existing["metadata"].get("labels") or {}) == labels
        ):
            return
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": key[1], "namespace": key[0], "labels": labels},
        }
        if rendered:
            body["subsets"] = rendered
        if existing is None:
            await self.store.create("endpoints", key[0], body)
            return

        def apply(current: dict[str, Any]) -> None:
            current["metadata"]["labels"] = labels
            if rendered:
                current["subsets"] = rendered
            else:
                current.pop("subsets", None)

        await self.store.mutate("endpoints", key[0], key[1], apply)


class EndpointSliceController(_ServiceController):
    """Maintains one IPv4 EndpointSlice per Service, with ready/serving/terminating conditions."""

    name = "endpointslice-controller"
    component = MANAGED_BY

    def _slices(self, namespace: str, service: str) -> list[dict[str, Any]]:
        return [
            e.obj
            for e in self.store.select(
                "endpointslices.discovery.k8s.io",
                namespace,
                f"{SERVICE_NAME_LABEL}={service},{MANAGED_BY_LABEL}={MANAGED_BY}",
            )
        ]

    async def reconcile(self, key: Key) -> None:
        """Write the EndpointSlice of one Service."""
        svc = self.store.peek("services", key[0], key[1])
        slices = self._slices(key[0], key[1])
        if svc is None or not (svc.get("spec") or {}).get("selector"):
            for obsolete in slices:
                with contextlib.suppress(NotFound):
                    await self.store.delete(
                        "endpointslices.discovery.k8s.io", key[0], obsolete["metadata"]["name"]
                    )
            return
        endpoints = []
        ports: list[dict[str, Any]] | None = None
        publish_not_ready = bool(svc["spec"].get("publishNotReadyAddresses"))
        for pod in self.selected_pods(svc):
            terminating = bool(pod["metadata"].get("deletionTimestamp"))
            ready = pod_ready(pod)
            pod_ports = []
            for port in svc["spec"].get("ports") or []:
                number = _target_port(port, pod)
                if number is None:
                    continue
                item: dict[str, Any] = {
                    "name": port.get("name", ""),
                    "port": number,
                    "protocol": port.get("protocol", "TCP"),
                }
                if port.get("appProtocol"):
                    item["appProtocol"] = port["appProtocol"]
                pod_ports.append(item)
            if ports is None:
                ports = pod_ports
            endpoint: dict[str, Any] = {
                "addresses": [pod["status"]["podIP"]],
                "conditions": {
                    "ready": (ready and not terminating) or publish_not_ready,
                    "serving": ready,
                    "terminating": terminating,
                },
                "targetRef": _target_ref(pod),
            }
            if pod["spec"].get("nodeName"):
                endpoint["nodeName"] = pod["spec"]["nodeName"]
            zone = self._zone(pod["spec"].get("nodeName"))
            if zone:
                endpoint["zone"] = zone
            endpoints.append(endpoint)
        endpoints.sort(key=lambda e: e["addresses"][0])
        labels = {
            **{k: v for k, v in (svc["metadata"].get("labels") or {}).items()},
            SERVICE_NAME_LABEL: key[1],
            MANAGED_BY_LABEL: MANAGED_BY,
        }
        body: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": f"{key[1]}-",
                "namespace": key[0],
                "labels": labels,
                "ownerReferences": [_service_ref(svc)],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports if ports is not None else [],
        }
        if not slices:
            await self.store.create("endpointslices.discovery.k8s.io", key[0], body)
            return
        current = slices[0]
        for extra in slices[1:]:
            with contextlib.suppress(NotFound):
                await self.store.delete(
                    "endpointslices.discovery.k8s.io", key[0], extra["metadata"]["name"]
                )
        if (
            current.get("endpoints") == endpoints
            and current.get("ports") == body["ports"]
            and current["metadata"].get("labels") == labels
        ):
            return

        def apply(obj: dict[str, Any]) -> None:
            obj["metadata"]["labels"] = labels
            obj["endpoints"] = copy.deepcopy(endpoints)
            obj["ports"] = copy.deepcopy(body["ports"])

        await self.store.mutate(
            "endpointslices.discovery.k8s.io", key[0], current["metadata"]["name"], apply
        )

    def _zone(self, node_name: str | None) -> str | None:
        if not node_name:
            return None
        node = self.store.peek("nodes", None, node_name)
        if node is None:
            return None
        return (node["metadata"].get("labels") or {}).get("topology.kubernetes.io/zone")
